package gateway

import (
	"errors"
	"strconv"
	"time"
)

// Timeout headers of the RPC protocols.
const (
	headerConnectTimeout = "Connect-Timeout-Ms"
	headerGRPCTimeout    = "Grpc-Timeout"
)

// errBadTimeout means a timeout header the gateway cannot read: a caller error.
var errBadTimeout = errors.New("gateway: malformed timeout header")

// parseConnectTimeout reads Connect-Timeout-Ms: at most 10 ASCII digits of milliseconds.
func parseConnectTimeout(v string) (time.Duration, error) {
	if v == "" || len(v) > 10 {
		return 0, errBadTimeout
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ms < 0 {
		return 0, errBadTimeout
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// parseGRPCTimeout reads grpc-timeout: at most 8 ASCII digits and a unit (H M S m u n).
func parseGRPCTimeout(v string) (time.Duration, error) {
	if len(v) < 2 || len(v) > 9 {
		return 0, errBadTimeout
	}
	n, err := strconv.ParseInt(v[:len(v)-1], 10, 64)
	if err != nil || n < 0 {
		return 0, errBadTimeout
	}
	var unit time.Duration
	switch v[len(v)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, errBadTimeout
	}
	// 8 digits of hours overflow time.Duration; such a deadline is "never" in practice.
	if limit := int64(1<<63-1) / int64(unit); n > limit {
		return time.Duration(1<<63 - 1), nil
	}
	return time.Duration(n) * unit, nil
}

// formatConnectTimeout renders a remaining time for Connect-Timeout-Ms, at least 1 ms so a
// nearly spent deadline is not sent as "no time at all" by rounding.
func formatConnectTimeout(d time.Duration) string {
	ms := max(int64(d/time.Millisecond), 1)
	return strconv.FormatInt(min(ms, 9_999_999_999), 10)
}

// formatGRPCTimeout renders a remaining time for grpc-timeout, rounded down: whole
// milliseconds from 1 s up (so a gateway-imposed default is the same value on every call
// and HTTP/2 header compression indexes it), microseconds below.
func formatGRPCTimeout(d time.Duration) string {
	switch {
	case d <= 0:
		return "1n"
	case d < time.Second:
		return strconv.FormatInt(max(int64(d/time.Microsecond), 1), 10) + "u"
	case d < 99_999_999*time.Millisecond:
		return strconv.FormatInt(int64(d/time.Millisecond), 10) + "m"
	case d < 99_999_999*time.Second:
		return strconv.FormatInt(int64(d/time.Second), 10) + "S"
	}
	return "99999999H"
}
