-- lib/checked.lua: checked(cmd, key, want, ...) runs a command on `key` and returns its
-- reply, raising (via foreign) when the key holds a type other than `want` (WRONGTYPE) or,
-- for a counter, a string that is not an integer. A read that the script needs anyway then
-- also validates its key, one call instead of TYPE first; a counter's INCRBY validates it
-- as it writes (it fails whole, changing nothing).
-- @include lib/foreign.lua
local function checked(cmd, key, want, ...)
  local reply = redis.pcall(cmd, key, ...)
  if type(reply) == 'table' and reply.err then
    if string.find(reply.err, 'WRONGTYPE', 1, true) then
      foreign(key, redis.call('TYPE', key)['ok'], want)
    elseif string.find(reply.err, 'not an integer', 1, true) then
      foreign(key, 'non-integer string', 'integer')
    end
    error(reply)  -- not about the data (OOM, READONLY, ...): as redis.call would raise it
  end
  return reply
end
