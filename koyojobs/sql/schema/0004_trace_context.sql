-- OpenTelemetry (koyojobs.otel): the enqueuing span's W3C trace context (the
-- propagator's carrier, as JSON), so an attempt's span joins the trace that
-- enqueued it. Written only while instrumentation is on; NULL otherwise.
ALTER TABLE koyojobs_jobs ADD COLUMN trace_context text;
