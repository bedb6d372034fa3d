// Command hybridxfer is the one CLI of the project: inspect model state
// (models), verify transfers byte for byte (verify), benchmark (bench), and
// run the disaggregated serving pieces.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	root := &cobra.Command{
		Use:           "hybridxfer",
		Short:         "State transfer engine for disaggregated serving of hybrid LLMs",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(modelsCmd(), verifyCmd(), benchCmd(), demoCmd(), serveCmd(), proxyCmd(), workerCmd(), keysCmd(), inspectCmd(), devicesCmd())
	// Tools (verify, bench, demo, ...) log warnings and errors only, not
	// every request's lifecycle; serve and proxy replace this with their
	// --log-format/--log-level/--log-sample logger.
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "hybridxfer:", err)
		os.Exit(exitCode(err))
	}
}

// exitError carries a specific exit status (verify's mismatches, say).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func exitCode(err error) int {
	if e, ok := err.(*exitError); ok {
		return e.code
	}
	return 1
}

// writeJSON prints v as indented JSON (the --json output of every command).
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
