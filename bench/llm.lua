-- wrk script for bench/llm.sh: POST a small chat completion, with the key from $KEY if set.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("KEY")
if key and key ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. key
end
wrk.body = '{"model":"' .. (os.getenv("MODEL") or "chat") .. '","messages":[{"role":"user","content":"Hello there"}],"max_tokens":16}'
