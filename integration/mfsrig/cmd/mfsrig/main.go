// Command mfsrig brings up the MooseFS rig of the tests for people and
// benchmarks: it prints one mount point per line, then keeps the rig up
// until interrupted (SIGINT or SIGTERM), when it takes everything down.
//
//	go run ./integration/mfsrig/cmd/mfsrig -clients 2 -rtt 2ms
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/volboot/volboot/integration/mfsrig"
)

func main() {
	clients := flag.Int("clients", 2, "mounts to make")
	rtt := flag.Duration("rtt", mfsrig.DefaultRTT, "round-trip time from each client to the master")
	dir := flag.String("dir", "", "where the rig's directory goes (default: the temporary directory)")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	r, err := mfsrig.Start(ctx, mfsrig.Options{Dir: *dir, Clients: *clients, RTT: *rtt,
		Logf: func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mfsrig:", err)
		os.Exit(1)
	}
	for _, c := range r.Clients() {
		fmt.Println(c.Mount)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	if err := r.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "mfsrig:", err)
		os.Exit(1)
	}
}
