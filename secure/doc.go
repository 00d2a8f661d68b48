// Package secure holds what Tally's security rests on, apart from where it
// is enforced: the TLS material of nodes, the proxy and clients (loaded
// once, and the development CA of `tally certs init`), who a request's
// caller is (a node by its certificate or the cluster secret, a client by
// its bearer token) and the roles that callers hold. The edge enforces
// the roles per route (edge.Guard); the Raft port and node-to-node calls
// take their TLS configurations from here.
//
// Roles are ordered: read < write < operator < node. A caller holds its
// role and every lower one, so a node may do anything, and only a node
// may call another node's internal routes.
package secure
