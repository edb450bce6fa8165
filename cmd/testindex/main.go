// Command testindex serves a directory of wheels as a PEP 503/691 simple
// index with per-file fault injection, for demos and manual testing:
//
//	testindex -dir ./wheels -addr 127.0.0.1:8080 \
//	    -fault 'torch-2.8.0-cp311-cp311-linux_x86_64.whl=drop=1048576,times=2' \
//	    -tree /hub/=./fake-hub -generate big.bin=2G
//
// It prints the base URL on the first line of stdout (the index is at
// <URL>/simple/, files at <URL>/files/<name>) and serves until SIGINT or
// SIGTERM. Fault specs are those of testindex.ParseFault.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/volboot/volboot/bootstrap/fetch"
	"github.com/volboot/volboot/integration/testindex"
)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, " ") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "testindex:", err)
		os.Exit(2)
	}
}

func run() error {
	var faults, trees, gens multiFlag
	dir := flag.String("dir", "", "directory of *.whl files to index")
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	flag.Var(&faults, "fault", "FILE=SPEC: inject a fault for a wheel filename or URL path (repeatable), e.g. x.whl=status=503,times=2")
	flag.Var(&trees, "tree", "PREFIX=DIR: also serve DIR's files under URL prefix PREFIX, e.g. /hub/=./hub (repeatable)")
	flag.Var(&gens, "generate", "NAME=SIZE: serve SIZE bytes of generated content at /files/NAME, e.g. big.bin=2G (repeatable)")
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}

	s := testindex.New()
	defer s.Close()
	if *dir != "" {
		if err := s.AddWheelDir(*dir); err != nil {
			return err
		}
	}
	for _, t := range trees {
		prefix, d, ok := strings.Cut(t, "=")
		if !ok {
			return fmt.Errorf("-tree %q: want PREFIX=DIR", t)
		}
		if err := s.AddTree(prefix, d); err != nil {
			return err
		}
	}
	for i, g := range gens {
		name, sz, ok := strings.Cut(g, "=")
		if !ok {
			return fmt.Errorf("-generate %q: want NAME=SIZE", g)
		}
		n, err := fetch.ParseSize(sz)
		if err != nil {
			return fmt.Errorf("-generate %q: %w", g, err)
		}
		if err := s.AddFile(testindex.FileURLPath(name), testindex.NewGenerated(n, uint64(i+1))); err != nil {
			return err
		}
	}
	for _, f := range faults {
		target, spec, ok := strings.Cut(f, "=")
		if !ok {
			return fmt.Errorf("-fault %q: want FILE=SPEC", f)
		}
		if !strings.HasPrefix(target, "/") {
			target = testindex.FileURLPath(target)
		}
		fl, err := testindex.ParseFault(spec)
		if err != nil {
			return err
		}
		if err := s.SetFault(target, fl); err != nil {
			return err
		}
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	fmt.Printf("http://%s\n", ln.Addr())
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}
