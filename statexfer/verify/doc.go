// Package verify runs the byte-exact transfer check behind `hybridxfer
// verify` and the planner's property tests: it lays out P's and D's per-rank
// memory with their real geometry, fills P with the synthetic coordinate
// pattern of package oracle, allocates block ids for a batch of requests
// (some with prefix hits on D), plans and executes every D rank's transfer,
// then checks every byte D owns against the pattern for D's own geometry and
// every other byte of D against its prior contents.
//
// It also runs the model check behind `hybridxfer verify --check model`
// (model.go: ModelCheck, RunModelCheck): a prefill and a decode engine.Engine
// in this process with their state in the real per-rank layouts, random
// prompts served disaggregated, every answer and final decode state
// compared with the monolithic reference model, nothing computed twice,
// everything released afterwards.
package verify
