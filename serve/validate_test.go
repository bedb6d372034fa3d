package serve

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hybridxfer/hybridxfer/groups"
)

const (
	cmplPath = "/v1/completions"
	chatPath = "/v1/chat/completions"
	// chatMsg is a valid messages array.
	chatMsg = `"messages":[{"role":"user","content":"a"}]`
)

// invalidCases are requests validate.go refuses: 400, code bad_request,
// the field in param and contains in the message.
var invalidCases = []struct {
	name, path, body string
	param, contains  string
}{
	{"temperature -3", cmplPath, `{"prompt":"a","temperature":-3}`, "temperature", "[0, 2]"},
	{"temperature 2.5 chat", chatPath, `{` + chatMsg + `,"temperature":2.5}`, "temperature", "greedily"},
	{"temperature type", cmplPath, `{"prompt":"a","temperature":"hot"}`, "temperature", "temperature"},
	{"temperature other spelling", cmplPath, `{"prompt":"a","Temperature":5}`, "temperature", "[0, 2]"},
	{"top_p 0", cmplPath, `{"prompt":"a","top_p":0}`, "top_p", "(0, 1]"},
	{"top_p 1.5", chatPath, `{` + chatMsg + `,"top_p":1.5}`, "top_p", "(0, 1]"},
	{"top_p -1", cmplPath, `{"prompt":"a","top_p":-1}`, "top_p", "(0, 1]"},
	{"n 5", cmplPath, `{"prompt":"a","n":5}`, "n", "one choice"},
	{"n 0 chat", chatPath, `{` + chatMsg + `,"n":0}`, "n", "one choice"},
	{"n 1.5", cmplPath, `{"prompt":"a","n":1.5}`, "n", "one choice"},
	{"n string", cmplPath, `{"prompt":"a","n":"1"}`, "n", "one choice"},
	{"best_of 2", cmplPath, `{"prompt":"a","best_of":2}`, "best_of", "one choice"},
	{"presence_penalty 3", cmplPath, `{"prompt":"a","presence_penalty":3}`, "presence_penalty", "[-2, 2]"},
	{"frequency_penalty -2.5", chatPath, `{` + chatMsg + `,"frequency_penalty":-2.5}`, "frequency_penalty", "[-2, 2]"},
	{"max_tokens 0", cmplPath, `{"prompt":"a","max_tokens":0}`, "max_tokens", "between 1"},
	{"max_tokens -1 chat", chatPath, `{` + chatMsg + `,"max_tokens":-1}`, "max_tokens", "between 1"},
	{"max_completion_tokens 0", chatPath, `{` + chatMsg + `,"max_completion_tokens":0}`, "max_completion_tokens", "between 1"},
	{"stop 5 strings", cmplPath, `{"prompt":"a","stop":["a","b","c","d","e"]}`, "stop", "at most 4"},
	{"stop number", chatPath, `{` + chatMsg + `,"stop":5}`, "stop", "string"},
	{"stop element", cmplPath, `{"prompt":"a","stop":["a",1]}`, "stop[1]", "stop[1]"},
	{"stop null element", cmplPath, `{"prompt":"a","stop":[null]}`, "stop[0]", "stop[0]"},
	{"stop string", cmplPath, `{"prompt":"a","stop":"\n"}`, "stop", "not supported"},
	{"stop in an array", chatPath, `{` + chatMsg + `,"stop":["", "x"]}`, "stop", "not supported"},
	{"seed 1.5", cmplPath, `{"prompt":"a","seed":1.5}`, "seed", "integer"},
	{"seed string", chatPath, `{` + chatMsg + `,"seed":"7"}`, "seed", "integer"},
	{"seed too big", cmplPath, `{"prompt":"a","seed":9223372036854775808}`, "seed", "integer"},
	{"logprobs true", chatPath, `{` + chatMsg + `,"logprobs":true}`, "logprobs", "not supported"},
	{"logprobs 5", cmplPath, `{"prompt":"a","logprobs":5}`, "logprobs", "not supported"},
	{"logprobs 0", cmplPath, `{"prompt":"a","logprobs":0}`, "logprobs", "not supported"},
	{"top_logprobs 3", chatPath, `{` + chatMsg + `,"top_logprobs":3}`, "top_logprobs", "not supported"},
	{"echo", cmplPath, `{"prompt":"a","echo":true}`, "echo", "not supported"},
	{"stream number", chatPath, `{` + chatMsg + `,"stream":1}`, "stream", "stream"},
	{"role wizard", chatPath, `{"messages":[{"role":"wizard","content":"a"}]}`, "messages[0].role", "wizard"},
	{"role function", chatPath, `{"messages":[{"role":"function","content":"a"}]}`, "messages[0].role", "developer"},
	{"role number", chatPath, `{"messages":[{"role":7,"content":"a"}]}`, "messages[0].role", "one of"},
	{"second role missing", chatPath, `{"messages":[{"role":"user","content":"a"},{"content":"b"}]}`, "messages[1].role", "required"},
	{"role empty", chatPath, `{"messages":[{"role":"","content":"a"}]}`, "messages[0].role", "one of"},
	{"user content missing", chatPath, `{"messages":[{"role":"user"}]}`, "messages[0].content", "required"},
	{"system content null", chatPath, `{"messages":[{"role":"system","content":null}]}`, "messages[0].content", "required"},
	{"content number", chatPath, `{"messages":[{"role":"user","content":5}]}`, "messages[0].content", "text parts"},
	{"content object", chatPath, `{"messages":[{"role":"user","content":{"type":"text","text":"a"}}]}`, "messages[0].content", "text parts"},
	{"part without text", chatPath, `{"messages":[{"role":"user","content":[{"type":"text"}]}]}`, "messages[0].content[0].text", "string"},
	{"part text number", chatPath, `{"messages":[{"role":"user","content":[{"type":"text","text":5}]}]}`, "messages[0].content[0].text", "string"},
	{"part string", chatPath, `{"messages":[{"role":"user","content":["a"]}]}`, "messages[0].content[0]", "object"},
	{"part without type", chatPath, `{"messages":[{"role":"user","content":[{"text":"a"}]}]}`, "messages[0].content[0].type", "(none)"},
	{"image part", chatPath, `{"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url"}]}]}`,
		"messages[0].content[1].type", "image_url"},
	{"message null", chatPath, `{"messages":[null]}`, "messages[0]", "object"},
	{"message string", chatPath, `{"messages":["hi"]}`, "messages[0]", "object"},
	{"messages empty", chatPath, `{"messages":[]}`, "messages", "empty"},
	{"messages absent", chatPath, `{"prompt":"a"}`, "messages", "empty"},
}

// checkInvalid asserts the 400 of an invalidCases case.
func checkInvalid(t *testing.T, resp *http.Response, param, contains string) errorBody {
	t.Helper()
	e := apiDecodeError(t, resp, http.StatusBadRequest)
	if e.Error.Param != param || e.Error.Code != "bad_request" || e.Error.Type != "invalid_request_error" ||
		!strings.Contains(e.Error.Message, contains) {
		t.Errorf("error %+v, want param %q, code bad_request and %q in the message", e.Error, param, contains)
	}
	return e
}

func TestValidateRefuses(t *testing.T) {
	for _, c := range invalidCases {
		t.Run(c.name, func(t *testing.T) {
			f := &fakeBackend{}
			srv := newAPI(t, f)
			checkInvalid(t, apiPost(t, srv.URL+c.path, c.body), c.param, c.contains)
			if n := len(f.requests()); n != 0 {
				t.Errorf("Generate called %d times", n)
			}
		})
	}
}

// The proxy refuses the same requests with the same error before it sends
// anything upstream: no prefill, nothing held, D never called.
func TestProxyValidatesFirst(t *testing.T) {
	x := newProxyFixture(t, 1, 1)
	for _, c := range invalidCases {
		t.Run(c.name, func(t *testing.T) {
			direct := checkInvalid(t, apiPost(t, x.dSrv[0].URL+c.path, c.body), c.param, c.contains)
			proxied := checkInvalid(t, apiPost(t, x.proxy.URL+c.path, c.body), c.param, c.contains)
			if *proxied.Error != *direct.Error {
				t.Errorf("proxy refused with %+v, D with %+v", proxied.Error, direct.Error)
			}
		})
	}
	x.drain()
	if p, d, a := len(x.ps[0].requests()), len(x.ds[0].requests()), len(x.ps[0].abortCalls()); p != 0 || d != 0 || a != 0 {
		t.Errorf("upstream saw %d prefills, %d decodes, %d aborts for requests the proxy refuses", p, d, a)
	}
}

// validCases are accepted: the backend runs them with prompt and n tokens.
var validCases = []struct {
	name, path, body, prompt string
	n                        int
}{
	{"temperature bounds", cmplPath, `{"prompt":"a","temperature":0,"top_p":1}`, "a", DefaultMaxTokens},
	{"temperature 2", chatPath, `{` + chatMsg + `,"temperature":2,"top_p":0.01}`, "user: a\nassistant: ", DefaultMaxTokens},
	{"nulls", cmplPath, `{"prompt":"a","temperature":null,"top_p":null,"n":null,"seed":null,"stop":null,"logprobs":null,` +
		`"presence_penalty":null,"frequency_penalty":null,"best_of":null,"echo":null,"max_tokens":null}`, "a", DefaultMaxTokens},
	{"n 1", cmplPath, `{"prompt":"a","n":1,"best_of":1,"echo":false,"max_tokens":3}`, "a", 3},
	{"n 1.0 chat", chatPath, `{` + chatMsg + `,"n":1.0,"max_completion_tokens":2}`, "user: a\nassistant: ", 2},
	{"penalties", cmplPath, `{"prompt":"a","presence_penalty":-2,"frequency_penalty":2}`, "a", DefaultMaxTokens},
	{"seeds", cmplPath, `{"prompt":"a","seed":-9223372036854775808}`, "a", DefaultMaxTokens},
	{"stop empty string", cmplPath, `{"prompt":"a","stop":""}`, "a", DefaultMaxTokens},
	{"stop 4 empty", chatPath, `{` + chatMsg + `,"stop":["","","",""]}`, "user: a\nassistant: ", DefaultMaxTokens},
	{"stop empty", cmplPath, `{"prompt":"a","stop":[]}`, "a", DefaultMaxTokens},
	{"logprobs false", chatPath, `{` + chatMsg + `,"logprobs":false,"top_logprobs":0}`, "user: a\nassistant: ", DefaultMaxTokens},
	{"unknown fields", cmplPath, `{"prompt":"a","user":"u","suffix":null,"logit_bias":{"1":2},"response_format":{"type":"text"}}`,
		"a", DefaultMaxTokens},
	{"every role", chatPath, `{"messages":[{"role":"system","content":"s"},{"role":"developer","content":"d"},` +
		`{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},` +
		`{"role":"assistant","content":null,"tool_calls":[]},{"role":"assistant"},{"role":"tool","content":"t","tool_call_id":"c"}],` +
		`"tools":[],"max_tokens":4}`,
		"system: s\ndeveloper: d\nuser: ab\nassistant: \nassistant: \ntool: t\nassistant: ", 4},
	{"empty parts", chatPath, `{"messages":[{"role":"user","content":[]}]}`, "user: \nassistant: ", DefaultMaxTokens},
}

func TestValidateAccepts(t *testing.T) {
	for _, c := range validCases {
		t.Run(c.name, func(t *testing.T) {
			f := &fakeBackend{}
			var r completionResponse
			apiDecode(t, apiPost(t, newAPI(t, f).URL+c.path, c.body), http.StatusOK, &r)
			reqs := f.requests()
			if len(reqs) != 1 || reqs[0].Prompt != c.prompt || reqs[0].MaxTokens != c.n {
				t.Fatalf("Generate saw %+v, want one request with prompt %q and max_tokens %d", reqs, c.prompt, c.n)
			}
		})
	}
}

func TestProxyAcceptsValid(t *testing.T) {
	x := newProxyFixture(t, 1, 1)
	for i, c := range validCases {
		t.Run(c.name, func(t *testing.T) {
			var r completionResponse
			apiDecode(t, apiPost(t, x.proxy.URL+c.path, c.body), http.StatusOK, &r)
			p, d := x.ps[0].requests(), x.ds[0].requests()
			if len(p) != i+1 || len(d) != i+1 || p[i].Prompt != c.prompt || d[i].Prompt != c.prompt || d[i].MaxTokens != c.n {
				t.Fatalf("P saw %+v, D saw %+v", p, d)
			}
		})
	}
}

// Prompt tokens + max_tokens above max_model_len is left to the engine
// (the API does not know the limit): a 400 naming max_model_len, and P
// holds nothing.
func TestMaxModelLenIs400(t *testing.T) {
	m, err := groups.Preset("qwen3.5-0.8b", groups.PresetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	x := newPD(t, m, groups.InstanceConfig{TP: 1}, groups.InstanceConfig{TP: 1}, func(p, _ *Config) { p.MaxModelLen = 64 })
	srv := httptest.NewServer(NewHandler(x.p, nil, nil))
	defer srv.Close()
	long := strings.Repeat("a", 62)
	body := `{"prompt":"` + long + `","max_tokens":3,"kv_transfer_params":{"do_remote_decode":true}}`
	e := apiDecodeError(t, apiPost(t, srv.URL+cmplPath, body), http.StatusBadRequest)
	if e.Error.Code != "bad_request" || !strings.Contains(e.Error.Message, "max_model_len") {
		t.Errorf("error %+v, want bad_request naming max_model_len", e.Error)
	}
	// Within the limit it runs (the refusal above was the length).
	body = `{"prompt":"` + long + `","max_tokens":2,"kv_transfer_params":{"do_remote_decode":true}}`
	var r completionResponse
	apiDecode(t, apiPost(t, srv.URL+cmplPath, body), http.StatusOK, &r)
	if r.KV == nil || r.KV.RemoteRequestID == "" {
		t.Fatalf("prefill answered %+v", r)
	}
	abort := `{"remote_request_id":"` + r.KV.RemoteRequestID + `","remote_grant":"` + r.KV.RemoteGrant + `"}`
	apiDecode(t, apiPost(t, srv.URL+"/v1/kv/abort", abort), http.StatusOK, &map[string]bool{})
	waitIdle(t, x.p)
}
