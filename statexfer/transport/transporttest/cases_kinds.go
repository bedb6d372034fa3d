package transporttest

import (
	"errors"
	"testing"

	"github.com/hybridxfer/hybridxfer/statexfer/transport"
)

// testMemoryKinds checks memory kinds: host and host-pinned memory are
// served, with the kind in Memory.Kind and the descriptor; device memory
// is either served (Supports nil, Alloc succeeds, no host view needed) or
// refused by Supports and Alloc alike with a *KindError that says why
// (errors.Is ErrUnsupported); an invalid kind is refused; a descriptor
// whose kind was altered does not import.
func testMemoryKinds(t *testing.T, env Env) {
	a, b := newNode(t, env), newNode(t, env)
	p := connect(t, a.tr, b.tr)
	for _, k := range []transport.MemKind{transport.HostMemory, transport.PinnedMemory} {
		if err := b.tr.Supports(k); err != nil {
			t.Fatalf("Supports(%s): %v", k, err)
		}
		m, err := b.tr.Alloc(4096, k)
		if err != nil {
			t.Fatalf("Alloc(%s): %v", k, err)
		}
		t.Cleanup(func() { m.Close() })
		if m.Kind() != k || m.Desc().Kind != k || len(m.Bytes()) != 4096 {
			t.Fatalf("Alloc(%s): kind %s, desc kind %s, %d host bytes", k, m.Kind(), m.Desc().Kind, len(m.Bytes()))
		}
		if _, err := p.Import(m.Desc()); err != nil {
			t.Fatalf("Import(%s): %v", k, err)
		}
		d := m.Desc()
		d.Kind = transport.DeviceMemory(0)
		if _, err := p.Import(d); err == nil {
			t.Errorf("Import of %s memory described as %s: accepted", k, d.Kind)
		}
	}
	dev := transport.DeviceMemory(0)
	supp := b.tr.Supports(dev)
	m, err := b.tr.Alloc(4096, dev)
	switch {
	case supp == nil && err != nil:
		t.Fatalf("Supports(%s) nil but Alloc: %v", dev, err)
	case supp == nil:
		m.Close()
	default:
		var ke *transport.KindError
		if !errors.As(supp, &ke) || !errors.Is(supp, transport.ErrUnsupported) || ke.Why == "" || ke.Kind != dev {
			t.Fatalf("Supports(%s): %v (%T), want a *KindError with a reason", dev, supp, supp)
		}
		if err == nil || !errors.Is(err, transport.ErrUnsupported) {
			t.Fatalf("Supports(%s) refused (%v) but Alloc: %v", dev, supp, err)
		}
		t.Logf("%s: %v", b.tr.Name(), supp)
	}
	if _, err := b.tr.Alloc(64, transport.MemKind{Type: 9}); !errors.Is(err, transport.ErrMemKind) {
		t.Errorf("Alloc of kind type 9: %v, want ErrMemKind", err)
	}
}
