-- wrk script for Prometheus Alertmanager: posts the event of event.lua as one v2 alert per request, with
-- the event id as a label so that every request is a new alert (Alertmanager merges equal label sets).
local head = "[{\"labels\":{\"alertname\":\"alarm\",\"event_id\":\""
local tail = "\",\"device_id\":\"12\",\"device\":\"Lena's Gazelle\",\"alarm\":\"vibration\"},\"annotations\":{\"summary\":\"alarm Lena's Gazelle\",\"latitude\":\"47.262195\",\"longitude\":\"11.413561\",\"eventTime\":\"2026-05-15T00:41:05.000+00:00\"}}]"
local counter = 0

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("base", (os.time() % 100000) * 1000000000 + threads * 100000000)
end

function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  return wrk.format(nil, nil, nil, head .. (base + counter) .. tail)
end
