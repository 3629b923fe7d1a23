-- Redis Cluster: the record alone (KEYS[1]; ARGV as PUT_WORKSPACE's). The index (another slot)
-- takes the id first, so a listed id whose record never came is skipped, and no record is unlisted.
--| needs: put-record
if not put_record() then return 0 end
return 1
