package openaitest

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	sdk "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/packages/ssestream"

	"github.com/hybridxfer/hybridxfer/backend"
	"github.com/hybridxfer/hybridxfer/openai"
)

// SDK is the official OpenAI Go client (github.com/openai/openai-go)
// pointed at an instance or a proxy at url: the client users' code runs.
// Its retries are off, so a refused request is seen as refused.
func SDK(url string, opts ...option.RequestOption) sdk.Client {
	return sdk.NewClient(append([]option.RequestOption{
		option.WithBaseURL(strings.TrimSuffix(url, "/") + "/v1/"),
		option.WithAPIKey("unused"),
		option.WithMaxRetries(0),
	}, opts...)...)
}

// SDKAnswer is one request through the SDK: a completion (chat false)
// or a chat completion with one user message, streamed or not, with the
// request id header id. It returns the generated text and the response's
// kv_transfer_params (nil when absent; on a stream, from the chunk that
// carries them); opts are added to the request (option.WithJSONSet for
// kv_transfer_params). A stream is read by the SDK's own decoder, and every
// chunk must hold exactly one choice with index 0 and name Model.
func SDKAnswer(ctx context.Context, c sdk.Client, id, prompt string, maxTokens int, chat, stream bool, opts ...option.RequestOption) (string, *backend.KVTransferParams, error) {
	opts = append([]option.RequestOption{option.WithHeader(openai.HeaderRequestID, id)}, opts...)
	var text strings.Builder
	var kv *backend.KVTransferParams
	// extra decodes kv_transfer_params, a field the SDK does not know.
	extra := func(raw string) error {
		var v struct {
			KV *backend.KVTransferParams `json:"kv_transfer_params"`
		}
		if err := json.Unmarshal([]byte(raw), &v); err != nil {
			return fmt.Errorf("openaitest: decoding %q: %w", raw, err)
		}
		if v.KV != nil {
			if kv != nil {
				return fmt.Errorf("openaitest: kv_transfer_params twice in one answer")
			}
			kv = v.KV
		}
		return nil
	}
	if chat {
		p := sdk.ChatCompletionNewParams{
			Model:               Model,
			Messages:            []sdk.ChatCompletionMessageParamUnion{sdk.UserMessage(prompt)},
			MaxCompletionTokens: sdk.Int(int64(maxTokens)),
		}
		if !stream {
			r, err := c.Chat.Completions.New(ctx, p, opts...)
			if err != nil {
				return "", nil, err
			}
			if len(r.Choices) != 1 || r.Model != Model {
				return "", nil, fmt.Errorf("openaitest: chat answer with %d choices, model %q: %s", len(r.Choices), r.Model, r.RawJSON())
			}
			err = extra(r.RawJSON()) // before kv is read: operand order is unspecified
			return r.Choices[0].Message.Content, kv, err
		}
		s := c.Chat.Completions.NewStreaming(ctx, p, opts...)
		err := readSDKStream(s, func(ch sdk.ChatCompletionChunk) error {
			if len(ch.Choices) != 1 || ch.Choices[0].Index != 0 || ch.Model != Model {
				return fmt.Errorf("openaitest: bad chat chunk %s", ch.RawJSON())
			}
			text.WriteString(ch.Choices[0].Delta.Content)
			return extra(ch.RawJSON())
		})
		return text.String(), kv, err
	}
	p := sdk.CompletionNewParams{
		Model:     Model,
		Prompt:    sdk.CompletionNewParamsPromptUnion{OfString: sdk.String(prompt)},
		MaxTokens: sdk.Int(int64(maxTokens)),
	}
	if !stream {
		r, err := c.Completions.New(ctx, p, opts...)
		if err != nil {
			return "", nil, err
		}
		if len(r.Choices) != 1 || r.Model != Model {
			return "", nil, fmt.Errorf("openaitest: completion with %d choices, model %q: %s", len(r.Choices), r.Model, r.RawJSON())
		}
		err = extra(r.RawJSON())
		return r.Choices[0].Text, kv, err
	}
	s := c.Completions.NewStreaming(ctx, p, opts...)
	err := readSDKStream(s, func(ch sdk.Completion) error {
		if len(ch.Choices) != 1 || ch.Choices[0].Index != 0 || ch.Model != Model {
			return fmt.Errorf("openaitest: bad completion chunk %s", ch.RawJSON())
		}
		text.WriteString(ch.Choices[0].Text)
		return extra(ch.RawJSON())
	})
	return text.String(), kv, err
}

// readSDKStream hands every chunk of s to f and returns the first error,
// the stream's own (an error event, a transport failure) included. A
// stream with no chunk at all is an error.
func readSDKStream[T any](s *ssestream.Stream[T], f func(T) error) error {
	defer s.Close()
	n := 0
	for s.Next() {
		n++
		if err := f(s.Current()); err != nil {
			return err
		}
	}
	if err := s.Err(); err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("openaitest: a stream without chunks")
	}
	return nil
}
