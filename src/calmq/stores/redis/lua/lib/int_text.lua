-- lib/int_text.lua: int_text(n), an integer as the text a Redis command takes.
-- A Lua number passed to redis.call() is formatted by Redis with a floating-point printf
-- ("%.17g": about 0.5 µs per argument on this kind of machine, most of a small command's
-- cost); '%d' costs about half of that, and a text made once serves every job of a batch.
local function int_text(n) return string.format('%d', n) end
