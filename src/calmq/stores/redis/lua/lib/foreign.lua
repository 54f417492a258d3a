-- lib/foreign.lua: foreign(key, found, want) raises "calmq: foreign data in <key>" for a key
-- that holds `found` where `want` was expected.
local function foreign(key, found, want)
  error({err = 'calmq: foreign data in ' .. key .. ' (a ' .. found .. ', expected a ' .. want .. ')'})
end
