package robustness

import (
	"fmt"
	"hash/fnv"
	"slices"
	"strings"

	"github.com/anishathalye/porcupine"
)

// The sequential specification of the part of etcd's API the traffic uses:
// a fixed set of keys under one prefix, revisions, txns comparing a key's
// mod_revision, and leases (grant, put with a lease, revoke). Porcupine
// searches for an order of the recorded operations, consistent with their
// real-time order, in which every operation's response is the one this
// model gives.
//
// A state is a comparable value, so equal states compare with == and hash
// cheaply; operations never mutate one.

// numKeys is the size of the key space: small, so that clients collide.
const numKeys = 8

// maxLeases bounds the leases alive at once in the model. Each client holds
// at most one and forgets it when it revokes it, so live leases are at most
// the clients plus revokes with an unknown outcome.
const maxLeases = 64

const keyPrefix = "/rb/"

func keyName(i int) string { return fmt.Sprintf("%sk%d", keyPrefix, i) }

// keyIndex is the inverse of keyName; -1 for a key outside the key space.
func keyIndex(key string) int {
	var i int
	if _, err := fmt.Sscanf(key, keyPrefix+"k%d", &i); err != nil || i < 0 || i >= numKeys || keyName(i) != key {
		return -1
	}
	return i
}

// keyValue is one key as a read returns it. Version 0 means absent.
type keyValue struct {
	Value                string
	Create, Mod, Version int64
	Lease                int64
}

func (kv keyValue) exists() bool { return kv.Version > 0 }

// state is the whole store: its revision, every key, and the live leases
// (sorted, zeros at the end).
type state struct {
	Rev    int64
	Keys   [numKeys]keyValue
	Leases [maxLeases]int64
}

func initialState() state { return state{Rev: 1} }

func (s *state) hasLease(id int64) bool {
	for _, l := range s.Leases {
		if l == id {
			return true
		}
		if l == 0 {
			return false
		}
	}
	return false
}

func (s *state) addLease(id int64) bool {
	n := slices.Index(s.Leases[:], 0)
	if n < 0 {
		return false
	}
	s.Leases[n] = id
	slices.Sort(s.Leases[:n+1])
	return true
}

func (s *state) removeLease(id int64) {
	i := slices.Index(s.Leases[:], id)
	copy(s.Leases[i:], s.Leases[i+1:])
	s.Leases[maxLeases-1] = 0
}

// put writes key k in the current revision (the caller bumps Rev once per
// request).
func (s *state) put(k int, value string, lease int64) {
	kv := &s.Keys[k]
	if !kv.exists() {
		kv.Create = s.Rev
	}
	kv.Value, kv.Mod, kv.Lease = value, s.Rev, lease
	kv.Version++
}

// opKind names a request the traffic sends.
type opKind uint8

const (
	opGet    opKind = iota // linearizable Get of one key
	opList                 // linearizable Range over the prefix, with a limit
	opPut                  // Put, with a lease when Lease != 0
	opDelete               // Delete of one key
	opCAS                  // Txn: mod_revision(key) == Expect ? Put : Get
	opGrant                // LeaseGrant
	opRevoke               // LeaseRevoke
)

var opNames = [...]string{"get", "list", "put", "delete", "cas", "grant", "revoke"}

func (k opKind) String() string { return opNames[k] }

func (k opKind) isWrite() bool { return k == opPut || k == opDelete || k == opCAS || k == opRevoke }

// input is one request.
type input struct {
	Kind   opKind
	Key    int    // opGet, opPut, opDelete, opCAS
	Value  string // opPut, opCAS: unique in the whole history
	Lease  int64  // opPut (0: none), opRevoke
	Expect int64  // opCAS: the mod_revision compared
	Limit  int64  // opList
}

// output is what the request returned. Unknown marks a request that failed
// or timed out: it may or may not have taken effect, so any outcome fits.
type output struct {
	Unknown       bool
	LeaseNotFound bool  // a definite failure: etcd's "requested lease not found"
	Rev           int64 // response header revision (not checked for grant and revoke)
	KVs           []namedKV
	Count         int64
	More          bool
	Deleted       int64
	Succeeded     bool  // opCAS
	LeaseID       int64 // opGrant
}

type namedKV struct {
	Key int
	keyValue
}

// step applies in to s and reports whether out is a response the request
// could have had; the new state is returned.
func step(s state, in input, out output) (bool, state) {
	want, next := respond(s, in)
	// A request whose outcome is unknown has its effect; any answer fits.
	return out.Unknown || want.equal(out), next
}

// respond is the model proper: the response to in in state s, and the state
// after it.
func respond(s state, in input) (output, state) {
	switch in.Kind {
	case opGet:
		out := output{Rev: s.Rev}
		if kv := s.Keys[in.Key]; kv.exists() {
			out.KVs, out.Count = []namedKV{{in.Key, kv}}, 1
		}
		return out, s
	case opList:
		out := pageAt(s, 0, in.Limit)
		out.Rev = s.Rev
		return out, s
	case opPut:
		if in.Lease != 0 && !s.hasLease(in.Lease) {
			return output{LeaseNotFound: true}, s
		}
		s.Rev++
		s.put(in.Key, in.Value, in.Lease)
		return output{Rev: s.Rev}, s
	case opDelete:
		if !s.Keys[in.Key].exists() {
			return output{Rev: s.Rev}, s
		}
		s.Rev++
		s.Keys[in.Key] = keyValue{}
		return output{Rev: s.Rev, Deleted: 1}, s
	case opCAS:
		kv := s.Keys[in.Key]
		if kv.Mod != in.Expect {
			out := output{Rev: s.Rev}
			if kv.exists() {
				out.KVs, out.Count = []namedKV{{in.Key, kv}}, 1
			}
			return out, s
		}
		s.Rev++
		s.put(in.Key, in.Value, 0)
		return output{Rev: s.Rev, Succeeded: true}, s
	case opGrant:
		// The ID is the server's choice: any new one fits.
		return output{}, s
	case opRevoke:
		if !s.hasLease(in.Lease) {
			return output{LeaseNotFound: true}, s
		}
		s.removeLease(in.Lease)
		deleted := false
		for k, kv := range s.Keys {
			if kv.exists() && kv.Lease == in.Lease {
				if !deleted {
					s.Rev++
					deleted = true
				}
				s.Keys[k] = keyValue{}
			}
		}
		return output{}, s
	}
	panic(fmt.Sprintf("robustness: unknown op kind %d", in.Kind))
}

// equal compares the model's response with the recorded one. A grant's ID
// is not the model's to predict; it only has to be new, which stepGrant
// checks.
func (want output) equal(got output) bool {
	return want.LeaseNotFound == got.LeaseNotFound && want.Rev == got.Rev && want.Count == got.Count &&
		want.More == got.More && want.Deleted == got.Deleted && want.Succeeded == got.Succeeded &&
		slices.Equal(want.KVs, got.KVs)
}

// kvModel is the porcupine model over state, with grants handled apart since
// their response carries a server-chosen ID that enters the state.
var kvModel = porcupine.Model{
	Init: func() any { return initialState() },
	Step: func(st, in, out any) (bool, any) {
		s, i, o := st.(state), in.(input), out.(output)
		if i.Kind == opGrant {
			return stepGrant(s, o)
		}
		return step(s, i, o)
	},
	Hash: func(st any) uint64 {
		s := st.(state)
		h := fnv.New64a()
		fmt.Fprint(h, s)
		return h.Sum64()
	},
	DescribeOperation: func(in, out any) string { return describe(in.(input), out.(output)) },
	DescribeState:     func(st any) string { return st.(state).String() },
}

// stepGrant: a grant with an unknown outcome is never used by its client
// (it does not know the ID), so it changes nothing observable; a known one
// adds its ID, which must not be live already.
func stepGrant(s state, out output) (bool, any) {
	if out.Unknown {
		return true, s
	}
	if out.LeaseID == 0 || s.hasLease(out.LeaseID) {
		return false, s
	}
	if !s.addLease(out.LeaseID) {
		panic("robustness: more than maxLeases live leases in the model")
	}
	return true, s
}

func (s state) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "rev %d {", s.Rev)
	for k, kv := range s.Keys {
		if kv.exists() {
			fmt.Fprintf(&b, " k%d=%s@%d", k, kv.Value, kv.Mod)
			if kv.Lease != 0 {
				fmt.Fprintf(&b, "(lease %x)", kv.Lease)
			}
		}
	}
	b.WriteString(" }")
	if n := slices.Index(s.Leases[:], 0); n != 0 {
		fmt.Fprintf(&b, " leases %x", s.Leases[:max(n, 0)])
	}
	return b.String()
}

func describe(in input, out output) string {
	var req string
	switch in.Kind {
	case opGet:
		req = fmt.Sprintf("get(k%d)", in.Key)
	case opList:
		req = fmt.Sprintf("list(limit %d)", in.Limit)
	case opPut:
		req = fmt.Sprintf("put(k%d, %s", in.Key, in.Value)
		if in.Lease != 0 {
			req += fmt.Sprintf(", lease %x", in.Lease)
		}
		req += ")"
	case opDelete:
		req = fmt.Sprintf("delete(k%d)", in.Key)
	case opCAS:
		req = fmt.Sprintf("cas(k%d mod==%d, %s)", in.Key, in.Expect, in.Value)
	case opGrant:
		req = "grant()"
	case opRevoke:
		req = fmt.Sprintf("revoke(%x)", in.Lease)
	}
	switch {
	case out.Unknown:
		return req + " -> unknown"
	case out.LeaseNotFound:
		return req + " -> lease not found"
	case in.Kind == opGrant:
		return fmt.Sprintf("%s -> %x", req, out.LeaseID)
	}
	res := fmt.Sprintf("rev %d", out.Rev)
	if in.Kind == opCAS {
		res += fmt.Sprintf(" succeeded=%v", out.Succeeded)
	}
	if in.Kind == opDelete {
		res += fmt.Sprintf(" deleted=%d", out.Deleted)
	}
	for _, kv := range out.KVs {
		res += fmt.Sprintf(" k%d=%s@%d", kv.Key, kv.Value, kv.Mod)
	}
	if in.Kind == opList {
		res += fmt.Sprintf(" count=%d more=%v", out.Count, out.More)
	}
	return req + " -> " + res
}
