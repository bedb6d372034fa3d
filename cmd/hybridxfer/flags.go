package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/hybridxfer/hybridxfer/hma"
	"github.com/spf13/cobra"
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

// cacheModeUsage is the help of --[side-]mamba-cache-mode.
const cacheModeUsage = "recurrent state caching (vLLM's mamba_cache_mode): none (one state per request, no prefix hits for hybrid models), align (states at block boundaries a step ends on are prefix-cached) or all (a state per block)"

// cacheModeFlag registers --PREFIXmamba-cache-mode (prefix "", "prefill-"
// or "decode-") into v.
func cacheModeFlag(c *cobra.Command, v *string, prefix, what string) {
	c.Flags().StringVar(v, prefix+"mamba-cache-mode", "none", what+cacheModeUsage)
}

// parseCacheMode parses a --*mamba-cache-mode value into fc.
func parseCacheMode(fc *flagChecks, name, v string) hma.RecurrentMode {
	m, err := hma.ParseRecurrentMode(v)
	if err != nil {
		fc.fail(name, "%q (want none, align or all)", v)
	}
	return m
}
