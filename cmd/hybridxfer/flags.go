package main

import (
	"errors"
	"fmt"
	"time"
)

// errFlag: a flag's value is out of its range. Every numeric flag is
// checked at startup, before anything is allocated or bound, and the
// message names the flag.
var errFlag = errors.New("bad flag")

// flagChecks collects the range checks of a command's flags; err joins
// every failure so an operator fixes them in one go.
type flagChecks struct{ errs []error }

func (c *flagChecks) fail(name, format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf("%w --%s: %s", errFlag, name, fmt.Sprintf(format, args...)))
}

// intIn: lo <= v <= hi.
func (c *flagChecks) intIn(name string, v, lo, hi int64) {
	if v < lo || v > hi {
		c.fail(name, "%d is outside [%d, %d]", v, lo, hi)
	}
}

// atLeast: v >= lo.
func (c *flagChecks) atLeast(name string, v, lo int64) {
	if v < lo {
		c.fail(name, "%d, must be at least %d", v, lo)
	}
}

// port: 1..65535 (zero allowed where it means "any free port").
func (c *flagChecks) port(name string, v int, zeroOK bool) {
	lo := int64(1)
	if zeroOK {
		lo = 0
	}
	c.intIn(name, int64(v), lo, 65535)
}

// duration: lo <= d <= hi.
func (c *flagChecks) duration(name string, d, lo, hi time.Duration) {
	if d < lo || d > hi {
		c.fail(name, "%v is outside [%v, %v]", d, lo, hi)
	}
}

// share: 0 <= v <= 1.
func (c *flagChecks) share(name string, v float64) {
	if !(v >= 0 && v <= 1) {
		c.fail(name, "%v is outside [0, 1]", v)
	}
}

func (c *flagChecks) err() error { return errors.Join(c.errs...) }
