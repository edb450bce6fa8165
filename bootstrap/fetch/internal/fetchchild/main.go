// Command fetchchild downloads one file with package fetch and exits: 0 on
// success, 1 on failure (the error on stderr). Tests run it as a separate
// process so they can kill it at any moment and measure its peak RSS.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"

	"github.com/volboot/volboot/bootstrap/fetch"

	"github.com/volboot/volboot/bench/procmem"
)

func main() {
	url := flag.String("url", "", "URL to fetch")
	sha := flag.String("sha256", "", "expected sha256")
	size := flag.Int64("size", -1, "expected size")
	dest := flag.String("dest", "", "destination path")
	rcvbuf := flag.Int("rcvbuf", 0, "SO_RCVBUF for connections (0: kernel default)")
	buffer := flag.Int("buffer", 0, "copy buffer size (0: fetch's default)")
	hwm := flag.Bool("hwm", false, "print this process's peak RSS (VmHWM, bytes) on stdout at exit")
	flag.Parse()

	tr := http.DefaultTransport.(*http.Transport).Clone()
	if *rcvbuf > 0 {
		d := &net.Dialer{Timeout: 10 * time.Second, Control: func(network, address string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, *rcvbuf)
			})
			if err != nil {
				return err
			}
			return serr
		}}
		tr.DialContext = d.DialContext
	}
	f := fetch.New(fetch.Options{Client: &http.Client{Transport: tr}, BufferSize: *buffer, MaxAttempts: 3})
	_, err := f.Fetch(context.Background(), []fetch.Item{{
		Name: "child", URLs: []string{*url}, Size: *size,
		Digest: fetch.Digest{Kind: fetch.SHA256, Hex: *sha}, Dest: *dest,
	}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if *hwm {
		m, err := procmem.Self()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(m.Peak)
	}
}
