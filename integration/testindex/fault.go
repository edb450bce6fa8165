package testindex

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ParseFault parses the command-line form of a Fault: comma-separated
// settings, e.g. "status=429,retry-after=2,times=3" or "drop=1048576" or
// "stall=30s@65536". Keys: times=K, status=CODE, retry-after=VALUE,
// drop=N (bytes of body before the connection is dropped), ignore-range,
// no-ranges, corrupt=OFFSET, stall=DURATION[@AFTERBYTES], wrong-length=DELTA,
// rate=BYTES-PER-SECOND.
// An empty spec is the zero Fault.
func ParseFault(spec string) (Fault, error) {
	var f Fault
	if strings.TrimSpace(spec) == "" {
		return f, nil
	}
	for _, kv := range strings.Split(spec, ",") {
		k, v, hasV := strings.Cut(strings.TrimSpace(kv), "=")
		needV := func() error {
			if !hasV || v == "" {
				return fmt.Errorf("fault %q: %s needs a value (%s=...)", spec, k, k)
			}
			return nil
		}
		num := func(min int64) (int64, error) {
			if err := needV(); err != nil {
				return 0, err
			}
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < min {
				return 0, fmt.Errorf("fault %q: %s=%q is not an integer >= %d", spec, k, v, min)
			}
			return n, nil
		}
		var err error
		var n int64
		switch k {
		case "times":
			n, err = num(0)
			f.Times = int(min(n, 1<<30))
		case "status":
			n, err = num(100)
			if err == nil && n > 599 {
				err = fmt.Errorf("fault %q: status=%d is not an HTTP status", spec, n)
			}
			f.Status = int(n)
		case "retry-after":
			err = needV()
			f.RetryAfter = v
		case "drop":
			f.Drop = true
			f.DropAfter, err = num(0)
		case "ignore-range":
			f.IgnoreRange = true
		case "no-ranges":
			f.NoRanges = true
		case "corrupt":
			f.Corrupt = true
			f.CorruptAt, err = num(0)
		case "stall":
			if err = needV(); err != nil {
				break
			}
			d, after, hasAfter := strings.Cut(v, "@")
			f.Stall, err = time.ParseDuration(d)
			if err == nil && f.Stall <= 0 {
				err = fmt.Errorf("fault %q: stall duration must be positive", spec)
			}
			if err == nil && hasAfter {
				f.StallAfter, err = strconv.ParseInt(after, 10, 64)
				if err == nil && f.StallAfter < 0 {
					err = fmt.Errorf("fault %q: stall offset must be >= 0", spec)
				}
			}
		case "wrong-length":
			n, err = num(-1 << 40)
			f.WrongLength = n
		case "rate":
			f.Rate, err = num(1)
		default:
			err = fmt.Errorf("fault %q: unknown setting %q (want times, status, retry-after, drop, ignore-range, no-ranges, corrupt, stall, wrong-length, rate)", spec, k)
		}
		if err != nil {
			return Fault{}, err
		}
	}
	return f, nil
}
