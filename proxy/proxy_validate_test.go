package proxy

import (
	"net/http"
	"testing"

	"github.com/hybridxfer/hybridxfer/openai/openaitest"
)

// The proxy refuses the same requests with the same error before it sends
// anything upstream: no prefill, nothing held, D never called.
func TestProxyValidatesFirst(t *testing.T) {
	x := newProxyFixture(t, 1, 1)
	for _, c := range openaitest.InvalidCases {
		t.Run(c.Name, func(t *testing.T) {
			direct := openaitest.CheckInvalid(t, openaitest.Post(t, x.dSrv[0].URL+c.Path, c.Body), c.Param, c.Contains)
			proxied := openaitest.CheckInvalid(t, openaitest.Post(t, x.proxy.URL+c.Path, c.Body), c.Param, c.Contains)
			if *proxied.Error != *direct.Error {
				t.Errorf("proxy refused with %+v, D with %+v", proxied.Error, direct.Error)
			}
		})
	}
	x.drain()
	if p, d, a := len(x.ps[0].Requests()), len(x.ds[0].Requests()), len(x.ps[0].AbortCalls()); p != 0 || d != 0 || a != 0 {
		t.Errorf("upstream saw %d prefills, %d decodes, %d aborts for requests the proxy refuses", p, d, a)
	}
}

func TestProxyAcceptsValid(t *testing.T) {
	x := newProxyFixture(t, 1, 1)
	for i, c := range openaitest.ValidCases {
		t.Run(c.Name, func(t *testing.T) {
			var r openaitest.CompletionResponse
			openaitest.Decode(t, openaitest.Post(t, x.proxy.URL+c.Path, c.Body), http.StatusOK, &r)
			p, d := x.ps[0].Requests(), x.ds[0].Requests()
			if len(p) != i+1 || len(d) != i+1 || p[i].Prompt != c.Prompt || d[i].Prompt != c.Prompt || d[i].MaxTokens != c.N {
				t.Fatalf("P saw %+v, D saw %+v", p, d)
			}
		})
	}
}
