// Package runtime is the root of volboot's supervisor: what runs after the
// volume is in sync (DESIGN.md §2, §15).
//
// It holds no code itself; the parts live in sub-packages so that none of
// them shadows the standard library's runtime package at import sites:
//
//	reaper     PID 1 / child-subreaper duties: one goroutine owns every wait
//	notify     the NOTIFY_SOCKET receiver and its datagram parser
//	readiness  "notify", "started" and http:// readiness checks
//	health     the /ping and /status server and the state it reports
//	supervise  the handler's life: bootstrap, start, signals, stop, restart
package runtime
