-- lib/foreign_type.lua: foreign_type(checks), for checks a list of {key, type} pairs: the
-- error text for the first key holding another type (a missing key is fine), or nil. The
-- caller returns redis.error_reply(text) before its first write.
local function foreign_type(checks)
  for _, pair in ipairs(checks) do
    local found = redis.call('TYPE', pair[1])['ok']
    if found ~= 'none' and found ~= pair[2] then
      return 'calmq: foreign data in ' .. pair[1] .. ' (a ' .. found
        .. ', expected a ' .. pair[2] .. ')'
    end
  end
  return nil
end
