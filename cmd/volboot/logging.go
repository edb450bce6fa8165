package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"
)

// isTerminal reports whether f is a terminal.
func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// newLogger builds volboot's logger writing to w. format is auto (console
// on a terminal, JSON otherwise, so that a platform's log collector gets
// structured lines), console or json. Every line carries logger=volboot so
// that volboot's lines stand apart from the handler's output, which passes
// through untouched.
func newLogger(format string, w *os.File, level zapcore.Level) (*zap.Logger, error) {
	format, err := resolveLogFormat(format, w)
	if err != nil {
		return nil, err
	}
	cfg := zap.NewProductionEncoderConfig()
	cfg.TimeKey = "ts"
	cfg.EncodeTime = zapcore.ISO8601TimeEncoder
	cfg.EncodeDuration = zapcore.StringDurationEncoder
	var enc zapcore.Encoder
	if format == "console" {
		cfg.EncodeLevel = zapcore.CapitalLevelEncoder
		cfg.ConsoleSeparator = " "
		enc = zapcore.NewConsoleEncoder(cfg)
	} else {
		enc = zapcore.NewJSONEncoder(cfg)
	}
	core := zapcore.NewCore(enc, syncIgnoringWriter{w}, level)
	return zap.New(core).Named("volboot"), nil
}

// resolveLogFormat turns --log-format into console or json: auto is
// console on a terminal, JSON otherwise.
func resolveLogFormat(format string, w *os.File) (string, error) {
	switch format {
	case "auto":
		if isTerminal(w) {
			return "console", nil
		}
		return "json", nil
	case "console", "json":
		return format, nil
	}
	return "", fmt.Errorf("--log-format %q: must be auto, console or json", format)
}

// syncIgnoringWriter drops the errors fsync gives on terminals and pipes
// (EINVAL, ENOTTY): they mean "nothing to flush", not a failure.
type syncIgnoringWriter struct{ f *os.File }

func (s syncIgnoringWriter) Write(p []byte) (int, error) { return s.f.Write(p) }

func (s syncIgnoringWriter) Sync() error {
	err := s.f.Sync()
	if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOTTY) || errors.Is(err, syscall.EBADF) {
		return nil
	}
	return err
}

var _ io.Writer = syncIgnoringWriter{}
