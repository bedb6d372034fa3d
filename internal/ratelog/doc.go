// Package ratelog rate-limits a log line that input from outside can
// trigger (a malformed message, a refused request): the first few go out
// at once, then at most one per interval, each saying how many were
// suppressed since the last one, so a hostile peer cannot flood the log.
//
// Limiter wraps golang.org/x/time/rate's token bucket; the counts of what
// was suppressed stay exact (they also belong in metrics).
package ratelog
