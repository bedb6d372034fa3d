// Package discovery registers instances in etcd and watches them: the
// metadata service Mooncake and Dynamo use, so a deployment's proxies
// find its prefill and decode instances without static URL lists.
//
// An instance (serve) calls Register with its Instance record (role,
// model, compatibility hash, tp, data-parallel rank, URL, engine id): the
// record is put under Prefix/instances/ROLE/ENGINE_ID with an etcd lease
// of TTL that the registration keeps alive, so a killed instance
// disappears when its lease expires; Deregister (on drain) revokes the
// lease and the record is gone at once. A proxy runs Watch: it reads the
// prefix, then follows its changes, and calls back with the live
// instances of each role after every change.
//
// Endpoints parses --discovery etcd://host:port[,host:port...]; Embedded
// starts an etcd server inside the process (go.etcd.io/etcd/server/v3/embed)
// for the demo and the tests, which always use a real etcd.
//
// Main types: Instance, Registration, Embedded. Errors: ErrEndpoint
// (a bad --discovery value), ErrRecord (a record that does not decode).
package discovery
