-- wrk script: posts a Traccar alarm event with a fresh event id per request (ids never repeat within
-- a run; each thread counts in its own range), so every request is a new event for the relay.
local head = "{\"event\":{\"id\":"
local tail = ",\"attributes\":{\"alarm\":\"vibration\"},\"deviceId\":12,\"type\":\"alarm\",\"eventTime\":\"2026-05-15T00:41:05.000+00:00\",\"positionId\":8813388,\"geofenceId\":0,\"maintenanceId\":0},\"position\":{\"id\":8813388,\"attributes\":{\"batteryLevel\":81,\"armed\":true,\"charge\":true,\"alarm\":\"vibration\",\"ignition\":false,\"status\":4294966270,\"distance\":0.0,\"totalDistance\":2008230.81,\"motion\":false,\"hours\":417930000},\"deviceId\":12,\"protocol\":\"h02\",\"serverTime\":\"2026-05-15T00:41:06.871+00:00\",\"deviceTime\":\"2026-05-15T00:41:05.000+00:00\",\"fixTime\":\"2026-05-15T00:41:05.000+00:00\",\"valid\":true,\"latitude\":47.262195,\"longitude\":11.413561,\"altitude\":0.0,\"speed\":0.0,\"course\":0.0,\"address\":null,\"accuracy\":0.0,\"network\":null,\"geofenceIds\":[9]},\"device\":{\"id\":12,\"attributes\":{\"speedLimit\":13.5},\"groupId\":3,\"calendarId\":0,\"name\":\"Lena's Gazelle\",\"uniqueId\":\"4710123456\",\"status\":\"online\",\"lastUpdate\":\"2026-05-15T00:41:06.852+00:00\",\"positionId\":8813387,\"phone\":\"+436641234567\",\"model\":\"BikeTrax\",\"contact\":\"Lena Hofer\",\"category\":\"bicycle\",\"disabled\":false,\"expirationTime\":null}}"
local counter = 0

local threads = 0
function setup(thread)
  -- Each thread gets its own id range; the run's start time keeps runs apart.
  threads = threads + 1
  -- ID_OFFSET keeps two wrk processes started in the same second apart (intake-pg.sh).
  local offset = tonumber(os.getenv("ID_OFFSET") or "0")
  thread:set("base", (os.time() % 100000) * 1000000000 + threads * 100000000 + offset)
end

function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  if os.getenv("AUTH") then wrk.headers["Authorization"] = os.getenv("AUTH") end
end

function request()
  counter = counter + 1
  return wrk.format(nil, nil, nil, head .. (base + counter) .. tail)
end
