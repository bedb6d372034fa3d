package main

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hybridxfer/hybridxfer/statexfer/grant"
	"github.com/hybridxfer/hybridxfer/statexfer/zmqchan"
)

// runKeys runs `hybridxfer keys ARGS...` and returns its stdout.
func runKeys(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := keysCmd()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Mode().Perm(); got != want {
		t.Errorf("%s: mode %#o, want %#o", path, got, want)
	}
}

func readString(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestKeysCurve(t *testing.T) {
	prefix := filepath.Join(t.TempDir(), "prefill-0")
	out, err := runKeys(t, "curve", "--out", prefix)
	if err != nil {
		t.Fatal(err)
	}
	checkMode(t, prefix+".key", 0o600)
	checkMode(t, prefix+".pub", 0o644)
	k, err := zmqchan.LoadCurveKey(prefix + ".key")
	if err != nil {
		t.Fatalf("load the secret key back: %v", err)
	}
	pub, err := zmqchan.LoadCurvePublic(prefix + ".pub")
	if err != nil {
		t.Fatalf("load the public key back: %v", err)
	}
	if pub != k.Public {
		t.Errorf("%s.pub holds %q, the secret key's public key is %q", prefix, pub, k.Public)
	}
	if got := readString(t, prefix+".pub"); got != k.Public+"\n" {
		t.Errorf("%s.pub = %q, want the key and a newline", prefix, got)
	}
	if got := readString(t, prefix+".key"); got != k.Secret+"\n" {
		t.Errorf("%s.key = %q, want the secret and a newline", prefix, got)
	}
	if out != k.Public+"\n" {
		t.Errorf("printed %q, want the public key %q", out, k.Public)
	}
	// The .pub file is a valid one-line allow-list too.
	if allow, err := zmqchan.LoadAllowList(prefix + ".pub"); err != nil || len(allow) != 1 || allow[0] != k.Public {
		t.Errorf("LoadAllowList(.pub) = %v, %v", allow, err)
	}

	// A second run refuses to overwrite either file, and leaves both alone.
	for _, existing := range []string{".key", ".pub"} {
		p2 := filepath.Join(t.TempDir(), "d")
		if err := os.WriteFile(p2+existing, []byte("keep me\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := runKeys(t, "curve", "--out", p2)
		if err == nil || !strings.Contains(err.Error(), p2+existing) || !strings.Contains(err.Error(), "--force") {
			t.Errorf("existing %s: err = %v, want a refusal naming the file and --force", existing, err)
		}
		if got := readString(t, p2+existing); got != "keep me\n" {
			t.Errorf("existing %s overwritten: %q", existing, got)
		}
		for _, other := range []string{".key", ".pub"} {
			if _, err := os.Stat(p2 + other); other != existing && err == nil {
				t.Errorf("existing %s: %s written anyway", existing, other)
			}
		}
	}
	if _, err := runKeys(t, "curve", "--out", prefix); err == nil {
		t.Fatal("second run overwrote the key pair")
	}
	if k2, err := zmqchan.LoadCurveKey(prefix + ".key"); err != nil || k2 != k {
		t.Fatalf("key changed by a refused run: %+v, %v", k2, err)
	}

	// --force replaces both, with the modes set afresh.
	if err := os.Chmod(prefix+".key", 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = runKeys(t, "curve", "--out", prefix, "--force")
	if err != nil {
		t.Fatal(err)
	}
	checkMode(t, prefix+".key", 0o600)
	checkMode(t, prefix+".pub", 0o644)
	k3, err := zmqchan.LoadCurveKey(prefix + ".key")
	if err != nil || k3 == k || out != k3.Public+"\n" {
		t.Fatalf("after --force: key %+v (old %+v), printed %q, %v", k3, k, out, err)
	}
	if entries, _ := os.ReadDir(filepath.Dir(prefix)); len(entries) != 2 {
		t.Errorf("%d files next to the keys, want 2 (temporary files left?)", len(entries))
	}

	if _, err := runKeys(t, "curve"); !errors.Is(err, errFlag) || !strings.Contains(err.Error(), "--out") {
		t.Errorf("without --out: err = %v", err)
	}
}

func TestKeysCluster(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cluster.key")
	out, err := runKeys(t, "cluster", "--out", path)
	if err != nil {
		t.Fatal(err)
	}
	if out != "" {
		t.Errorf("printed %q; the cluster key must not be printed", out)
	}
	checkMode(t, path, 0o600)
	text := readString(t, path)
	raw, err := hex.DecodeString(strings.TrimSuffix(text, "\n"))
	if err != nil || len(raw) != 32 || !strings.HasSuffix(text, "\n") || strings.Count(text, "\n") != 1 {
		t.Fatalf("%s = %q: want 32 bytes of hex on one line (%v)", path, text, err)
	}
	k, err := grant.LoadKey(path)
	if err != nil || k.Hex() != hex.EncodeToString(raw) {
		t.Fatalf("grant.LoadKey = %v, %v", k, err)
	}

	_, err = runKeys(t, "cluster", "--out", path)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "--force") {
		t.Errorf("second run: err = %v, want a refusal naming the file and --force", err)
	}
	if got := readString(t, path); got != text {
		t.Fatalf("refused run changed the key")
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := runKeys(t, "cluster", "--out", path, "--force"); err != nil {
		t.Fatal(err)
	}
	checkMode(t, path, 0o600)
	if got := readString(t, path); got == text || len(got) != 65 {
		t.Fatalf("after --force: %q (old %q), want a new key", got, text)
	}
}
