package main

import (
	"io"
	"os"
	"strconv"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// progress is a progress bar on a long run: call Add as steps finish and
// Finish (idempotent) before printing the result. The zero value does
// nothing, which is what newProgress returns off a terminal: stdout
// carries results that scripts parse, and CI logs need no bars.
type progress struct{ bar *progressbar.ProgressBar }

// progressTerminal says whether a bar is drawn on w: stdout and w are both
// terminals and CI is not set to true. A package variable so that tests
// can force it.
var progressTerminal = func(w io.Writer) bool {
	if ci, err := strconv.ParseBool(os.Getenv("CI")); err == nil && ci {
		return false
	}
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(os.Stdout.Fd())) && term.IsTerminal(int(f.Fd()))
}

// newProgress returns a bar of total steps described by what, drawn on w
// (the command's stderr, never stdout), or a no-op when w is not a
// terminal or there is at most one step.
func newProgress(w io.Writer, total int, what string) progress {
	if total <= 1 || !progressTerminal(w) {
		return progress{}
	}
	return progress{bar: progressbar.NewOptions(total,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowCount(),
		progressbar.OptionSetRenderBlankState(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)}
}

// Add records n finished steps.
func (p progress) Add(n int) {
	if p.bar != nil {
		_ = p.bar.Add(n)
	}
}

// Finish fills the bar and clears its line.
func (p progress) Finish() {
	if p.bar != nil {
		_ = p.bar.Finish()
	}
}
