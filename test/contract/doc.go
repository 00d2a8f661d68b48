// Package contract holds the tests that keep the API's two descriptions
// true of the product, at a node and at the proxy alike:
// docs/openapi.yaml (the shape of every route: paths, methods, query
// parameters, bodies, statuses) and the examples of docs/api.md (a
// walkthrough whose answers are compared with the ones shown). Every
// request the tests send, and every answer they get, is validated
// against the OpenAPI document; an answer it does not describe fails.
//
// The servers are in-process (shard/shardtest with the node's API, and
// proxy.New in front of it) on loopback, with their data in t.TempDir.
package contract
