package lockgen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// Command is one program to run: uv, or the Python that installs it.
type Command struct {
	Path string
	Args []string
	Dir  string
	Env  []string // the whole environment; nil means none
}

func (c Command) String() string {
	return strings.Join(append([]string{c.Path}, c.Args...), " ")
}

// Output is what a finished command left behind.
type Output struct {
	Stdout, Stderr []byte
	ExitCode       int // 0 on success
}

// Runner runs commands. ExecRunner runs real processes; tests may
// substitute their own.
type Runner interface {
	// Run runs c to completion. A program that ran and exited non-zero is
	// an Output with its ExitCode and a nil error; err is for a program
	// that could not be started or was stopped by ctx.
	Run(ctx context.Context, c Command) (Output, error)
}

// ExecRunner runs commands as child processes; ctx kills them.
type ExecRunner struct{}

// Run implements Runner.
func (ExecRunner) Run(ctx context.Context, c Command) (Output, error) {
	cmd := exec.CommandContext(ctx, c.Path, c.Args...)
	cmd.Dir = c.Dir
	cmd.Env = c.Env
	if cmd.Env == nil {
		cmd.Env = []string{}
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	out := Output{Stdout: stdout.Bytes(), Stderr: stderr.Bytes()}
	if ctx.Err() != nil {
		return out, ctx.Err()
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.Exited() {
		out.ExitCode = ee.ExitCode()
		return out, nil
	}
	if err != nil {
		return out, fmt.Errorf("run %s: %w", c.Path, err)
	}
	return out, nil
}
