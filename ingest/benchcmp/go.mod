module upsink/ingest/benchcmp

go 1.26

require upsink v0.0.0

require github.com/valyala/fastjson v1.6.10

replace upsink => ../..
