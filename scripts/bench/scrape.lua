-- wrk script: a scrape loop against /metrics, each connection scraping again 10 ms after its last
-- answer (with -c4, at most 400 scrapes/s: far more than any Prometheus, far less than a flood).
function delay()
  return 10
end
