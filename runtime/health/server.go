package health

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"go.uber.org/zap"
)

// Handler serves /ping and /status from state. Other paths are 404; methods
// other than GET and HEAD are 405.
func Handler(state *State) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ping", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(state.Phase().PingCode())
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(state.Snapshot())
	})
	return mux
}

// DefaultAddr is the default --health-addr: ":$PORT_HEALTH" when that is
// set, otherwise "" (no health server). getenv is os.Getenv in production.
func DefaultAddr(getenv func(string) string) string {
	if p := getenv("PORT_HEALTH"); p != "" {
		return ":" + p
	}
	return ""
}

// Server is a running health endpoint. It owns one serving goroutine,
// which Shutdown stops.
type Server struct {
	srv  *http.Server
	ln   net.Listener
	done chan error
}

// Listen binds addr (host:port; ":0" picks a free port) before returning, so
// a port clash is reported at once and Addr is known, then serves state in
// the background.
func Listen(addr string, state *State, logger *zap.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("health server: listening on %q (--health-addr / PORT_HEALTH): %w", addr, err)
	}
	s := &Server{
		srv: &http.Server{
			Handler:           Handler(state),
			ReadHeaderTimeout: 5 * time.Second,
			ErrorLog:          zap.NewStdLog(logger.Named("health")),
		},
		ln:   ln,
		done: make(chan error, 1),
	}
	go func() {
		err := s.srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		s.done <- err
	}()
	logger.Info("health server listening", zap.String("addr", ln.Addr().String()))
	return s, nil
}

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Shutdown stops accepting, lets in-flight requests finish until ctx ends,
// and waits for the serving goroutine. It returns the error Serve ended
// with, if any.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if serr := <-s.done; serr != nil && err == nil {
		err = fmt.Errorf("health server: %w", serr)
	}
	return err
}
