package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// report tells the user once why cmd failed and returns the exit code.
// The reason is one line on stderr, "volboot: <err>", or, when the logs are
// JSON, one JSON log line with the same text and the exit code, so that a
// log collector gets a record instead of a stray line of text. Nothing else
// logs a fatal error: the commands return it. A command run with --json
// also prints {"error", "exit_code"} on stdout, so that a script reading
// stdout gets JSON whatever happened.
func (a *app) report(cmd *cobra.Command, args []string, err error) int {
	if err == nil {
		return exitOK
	}
	code, msg, usage := exitUsage, err.Error(), true
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err == nil {
			// The command has said why already: status's drift
			// report, the handler's own exit.
			return ee.code
		}
		code, msg, usage = ee.code, ee.err.Error(), false
	}
	if wantsJSON(cmd, args) {
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(jsonError{Error: msg, ExitCode: code})
	}
	if log := a.jsonLogger(); log != nil {
		log.Error(msg, zap.Int("exit_code", code))
		return code
	}
	fmt.Fprintf(a.stderr, "volboot: %s\n", msg)
	if usage {
		// Errors cobra makes itself: an unknown command, a wrong
		// number of arguments.
		fmt.Fprintln(a.stderr, "Run 'volboot --help' for usage.")
	}
	return code
}

// jsonError is what a command run with --json prints on stdout when it fails.
type jsonError struct {
	Error    string `json:"error"`
	ExitCode int    `json:"exit_code"`
}

// wantsJSON reports whether cmd was asked for --json. When the flags did
// not parse, --json may lie beyond the bad one, so the arguments are read
// as well.
func wantsJSON(cmd *cobra.Command, args []string) bool {
	if cmd == nil || cmd.Flags().Lookup("json") == nil {
		return false
	}
	if cmd.Flags().Changed("json") {
		on, err := cmd.Flags().GetBool("json")
		return err == nil && on
	}
	for _, arg := range args {
		if arg == "--" {
			break
		}
		if arg == "--json" {
			return true
		}
		if v, ok := strings.CutPrefix(arg, "--json="); ok {
			on, err := strconv.ParseBool(v)
			return err == nil && on
		}
	}
	return false
}

// jsonLogger returns the logger when the logs are JSON, making it if the
// command failed before it was made (a bad flag), and nil otherwise.
func (a *app) jsonLogger() *zap.Logger {
	format, err := resolveLogFormat(a.opts.logFormat, a.stderr)
	if err != nil || format != "json" {
		return nil
	}
	if a.log == nil {
		if a.log, err = newLogger(format, a.stderr, zapcore.InfoLevel); err != nil {
			return nil
		}
	}
	return a.log
}
