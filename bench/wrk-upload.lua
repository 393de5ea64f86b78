-- bench/wrk-upload.lua: wrk uploads 1 KiB bodies to upsink.
--
--   wrk -t2 -c64 -d15s -s bench/wrk-upload.lua http://127.0.0.1:8080/upload/wrk
--
-- Every request is the same POST (wrk sends one pre-built request per
-- connection unless request() builds a new one, which costs a Lua call per
-- request); done() prints the statuses wrk does not break down. The body
-- size can be changed with WRK_BODY (bytes).

local size = tonumber(os.getenv("WRK_BODY") or "1024")
local chunk = "abcdefghijklmnopqrstuvwxyz0123456789\n"
local body = string.rep(chunk, math.floor(size / #chunk) + 1):sub(1, size)

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/octet-stream"

local statuses = {}
local threads = {}

function setup(thread)
   table.insert(threads, thread)
   thread:set("id", #threads)
end

function init(args)
   created, other = 0, 0
end

function response(status, headers, body)
   if status == 201 then
      created = created + 1
   else
      other = other + 1
   end
end

function done(summary, latency, requests)
   local c, o = 0, 0
   for _, t in ipairs(threads) do
      c = c + t:get("created")
      o = o + t:get("other")
   end
   io.write(string.format("201s: %d  other statuses: %d  (%.0f uploads/s)\n",
      c, o, c / (summary.duration / 1e6)))
end
