package secure

import "fmt"

// Role is what a caller may do; a higher role includes every lower one.
type Role uint8

// Roles, in order.
const (
	// RoleNone is held by every caller, even one without a credential:
	// health probes need only it.
	RoleNone Role = iota
	// RoleRead reads balances, events, sagas, the cluster's layout.
	RoleRead
	// RoleWrite creates accounts and transfers and commits consumer
	// offsets.
	RoleWrite
	// RoleOperator changes membership, resolves sagas, resets and deletes
	// consumers, takes backups and profiles.
	RoleOperator
	// RoleNode is held only by nodes of the cluster, proven by a node
	// certificate or the cluster secret. Only it reaches /v1/internal/.
	RoleNode
)

var roleNames = [...]string{"none", "read", "write", "operator", "node"}

func (r Role) String() string {
	if int(r) < len(roleNames) {
		return roleNames[r]
	}
	return fmt.Sprintf("role(%d)", r)
}

// ParseRole reads a role a token may be given: read, write or operator.
// Node is not one: nodes prove themselves by certificate or secret.
func ParseRole(s string) (Role, error) {
	switch s {
	case "read":
		return RoleRead, nil
	case "write":
		return RoleWrite, nil
	case "operator":
		return RoleOperator, nil
	}
	return RoleNone, fmt.Errorf("role %q: use read, write or operator", s)
}

// Principal is who made a request.
type Principal struct {
	// Name is the token's name, the node certificate's common name, or
	// "" for a caller without a credential.
	Name string
	Role Role
}

// Anonymous is a caller that showed no credential.
var Anonymous = Principal{}

func (p Principal) String() string {
	if p.Name == "" {
		return "anonymous"
	}
	return p.Role.String() + ":" + p.Name
}
