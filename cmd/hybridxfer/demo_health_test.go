package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
)

// TestWaitHealthyStopsWhenTheProcessExits: a child that died (its port
// taken, a bad flag) is reported at once as exited, not polled until the
// health deadline passes.
func TestWaitHealthyStopsWhenTheProcessExits(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + l.Addr().String()
	l.Close() // nothing answers there
	exited := make(chan struct{})
	close(exited)
	err = waitHealthy(context.Background(), url, exited)
	if !errors.Is(err, errExited) {
		t.Fatalf("waitHealthy after exit: %v, want errExited", err)
	}
}

// TestWaitHealthyAnswersWhenHealthy: the same wait returns nil once
// /health answers 200, even with an exit channel that never closes.
func TestWaitHealthyAnswersWhenHealthy(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health" {
			http.NotFound(w, r)
		}
	})}
	go srv.Serve(l)
	defer srv.Close()
	if err := waitHealthy(context.Background(), "http://"+l.Addr().String(), make(chan struct{})); err != nil {
		t.Fatal(err)
	}
}

// TestTailWriterKeepsTheEnd: the log tail a failed start prints is the
// last bytes written, across writes.
func TestTailWriterKeepsTheEnd(t *testing.T) {
	w := &tailWriter{max: 10}
	for _, s := range []string{"abc", "defghij", "klmnop", "q"} {
		w.Write([]byte(s))
	}
	if got, want := w.String(), "hijklmnopq"; got != want {
		t.Fatalf("tail %q, want %q", got, want)
	}
	if !strings.HasSuffix(w.String(), "q") {
		t.Fatal("tail lost the last write")
	}
}
