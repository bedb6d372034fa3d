// Package openaitest helps test code that talks to the OpenAI-compatible
// API: Backend is a deterministic backend.Backend (prefill, decode or
// monolithic, with injectable errors, gates and blocking) served by the
// real handler (Serve, ServeWith); Post, Get, Send, Decode, DecodeError,
// ReadSSE, ParseSSE and ReadStream read answers (streams through the
// OpenAI SDK's event decoder, openai-go's ssestream, with our stricter
// framing checked on the raw bytes); SDK and SDKAnswer send requests with
// the official OpenAI Go client, as users do; BadRequestCases, InvalidCases and
// ValidCases are the request tables the API and the proxy must answer
// alike.
package openaitest
