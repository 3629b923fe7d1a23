--| needs: put-record
if not put_record() then return 0 end
redis.call('ZADD', KEYS[2], 0, ARGV[3])
return 1
