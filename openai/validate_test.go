package openai_test

import (
	"net/http"
	"testing"

	"github.com/hybridxfer/hybridxfer/openai/openaitest"
)

func TestValidateRefuses(t *testing.T) {
	for _, c := range openaitest.InvalidCases {
		t.Run(c.Name, func(t *testing.T) {
			f := &openaitest.Backend{}
			srv := openaitest.Serve(t, f)
			openaitest.CheckInvalid(t, openaitest.Post(t, srv.URL+c.Path, c.Body), c.Param, c.Contains)
			if n := len(f.Requests()); n != 0 {
				t.Errorf("Generate called %d times", n)
			}
		})
	}
}

func TestValidateAccepts(t *testing.T) {
	for _, c := range openaitest.ValidCases {
		t.Run(c.Name, func(t *testing.T) {
			f := &openaitest.Backend{}
			var r openaitest.CompletionResponse
			openaitest.Decode(t, openaitest.Post(t, openaitest.Serve(t, f).URL+c.Path, c.Body), http.StatusOK, &r)
			reqs := f.Requests()
			if len(reqs) != 1 || reqs[0].Prompt != c.Prompt || reqs[0].MaxTokens != c.N {
				t.Fatalf("Generate saw %+v, want one request with prompt %q and max_tokens %d", reqs, c.Prompt, c.N)
			}
		})
	}
}
