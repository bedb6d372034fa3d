package zmqchan

import "time"

// EstimateClockOffset estimates how far a server's wall clock is ahead of
// the local one (negative: behind) from one round trip: the server stamped
// serverUnixNano somewhere between the local times sent and received, so
//
//	offset = serverUnixNano - (sent + received)/2
//
// with an error of at most uncertainty = (received - sent)/2, assuming both
// clocks run at the same rate during the round trip. The round-trip time is
// taken from the monotonic readings of sent and received when both have them.
// Take the estimate with the smallest uncertainty over several round trips
// for a better one.
func EstimateClockOffset(serverUnixNano int64, sent, received time.Time) (offset, uncertainty time.Duration) {
	rtt := received.Sub(sent)
	if rtt < 0 {
		rtt = 0
	}
	mid := sent.UnixNano() + int64(rtt/2)
	return time.Duration(serverUnixNano - mid), rtt / 2
}

// ClockOffset is EstimateClockOffset for a reply returned by Fetch.
func (r *Reply) ClockOffset() (offset, uncertainty time.Duration) {
	return EstimateClockOffset(r.Timestamp, r.Sent, r.Received)
}

// RTT is the round-trip time of the fetch that returned r.
func (r *Reply) RTT() time.Duration { return r.Received.Sub(r.Sent) }
