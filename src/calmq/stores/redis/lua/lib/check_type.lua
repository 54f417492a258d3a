-- lib/check_type.lua: check_type(key, want) raises (via foreign) when key holds a type other
-- than `want`; returns the type found ('none' for a missing key).
-- @include lib/foreign.lua
local function check_type(key, want)
  local found = redis.call('TYPE', key)['ok']
  if found ~= 'none' and found ~= want then foreign(key, found, want) end
  return found
end
