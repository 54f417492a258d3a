-- lib/check_counter.lua: check_counter(key) raises (via foreign) unless key is missing or
-- a string holding a number.
-- @include lib/check_type.lua
local function check_counter(key)
  check_type(key, 'string')
  local value = redis.call('GET', key)
  if value and not tonumber(value) then foreign(key, 'non-integer string', 'integer') end
end
