// Package openaitest helps test code that talks to the OpenAI-compatible
// API: Backend is a deterministic backend.Backend (prefill, decode or
// monolithic, with injectable errors, gates and blocking) served by the
// real handler (Serve, ServeWith); Post, Get, Send, Decode, DecodeError,
// ReadSSE and ReadStream read answers; BadRequestCases, InvalidCases and
// ValidCases are the request tables the API and the proxy must answer
// alike.
package openaitest
