-- wrk script: one inference on the demo model, with the API key from PORTCULLIS_KEY.
-- wrk counts answers other than 2xx/3xx itself ("Non-2xx or 3xx responses").
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("PORTCULLIS_KEY")
wrk.body = '{"inputs":[{"name":"features","shape":[1,8],"datatype":"FP32","data":[[35,52000,0.3,4,0,15000,6,0.35]]}]}'
