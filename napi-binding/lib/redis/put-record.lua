-- A workspace record's write: KEYS[1] = its key, KEYS[2] = the index of every workspace id (a
-- sorted set, all scores 0: ordered by id, paged by ZRANGEBYLEX for GET /v1/admin/workspaces);
-- ARGV[1] = the record JSON, ARGV[2] = the revision the stored record must have ('' = none may
-- be stored), ARGV[3] = its id. Answers 1, or 0 when another write came first (nothing written).
-- Records written before revisions existed count as 0. The id joins the index in the step that
-- first puts the record (and again on every write: a workspace made before the index existed
-- joins it at its next change).
local function put_record()
  local cur = redis.call('GET', KEYS[1])
  if ARGV[2] == '' then
    if cur then return false end
  else
    if not cur then return false end
    local rev = cjson.decode(cur).revision
    if type(rev) ~= 'number' then rev = 0 end
    if rev ~= tonumber(ARGV[2]) then return false end
  end
  redis.call('SET', KEYS[1], ARGV[1])
  return true
end
