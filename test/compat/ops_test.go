package compat

// The operations a script is made of. Each constructor returns a step with a
// human-readable description (printed on a mismatch) and a function that runs
// it on one target. Revisions and leases in scripts are symbolic, so the same
// script means the same thing on both servers:
//
//   - at(n) is the revision n writes after the start of the case (@n), and
//     absRev(n) is revision n itself;
//   - lease(i) is the i-th lease granted in the current case (L<i>), and
//     rawLease(id) is a fixed lease ID.

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// step is one operation of a script.
type step struct {
	desc string
	// op is set for KV operations, which can also be used inside a txn.
	op func(tg *target) clientv3.Op
	// run is set for every other step and returns the rendered result.
	run func(ctx context.Context, tg *target) string
	// serial runs the step on one server after the other, in the test's
	// goroutine, instead of on both at once.
	serial bool
}

// exec runs s on tg and returns the rendered, normalised result.
func (s step) exec(ctx context.Context, tg *target) string {
	defer tg.settle(ctx)
	if s.run != nil {
		return s.run(ctx, tg)
	}
	resp, err := tg.cli.Do(ctx, s.op(tg))
	if err != nil {
		return tg.render(nil, err)
	}
	return tg.render(opResponseProto(resp), nil)
}

// revArg is a revision in a script: relative to the case start unless abs.
type revArg struct {
	n   int64
	abs bool
}

func at(n int64) revArg     { return revArg{n: n} }
func absRev(n int64) revArg { return revArg{n: n, abs: true} }

func (r revArg) String() string {
	if r.abs {
		return strconv.FormatInt(r.n, 10)
	}
	return "@" + strconv.FormatInt(r.n, 10)
}

func (r revArg) resolve(tg *target) int64 {
	if r.abs {
		return r.n
	}
	return tg.base + r.n
}

// leaseArg is a lease in a script: the i-th lease granted in the case, or a
// fixed ID.
type leaseArg struct {
	i  int
	id int64
}

func lease(i int) leaseArg       { return leaseArg{i: i} }
func rawLease(id int64) leaseArg { return leaseArg{id: id} }

func (l leaseArg) String() string {
	if l.i > 0 {
		return "L" + strconv.Itoa(l.i)
	}
	return fmt.Sprintf("%#x", l.id)
}

func (l leaseArg) resolve(tg *target) int64 {
	if l.i == 0 {
		return l.id
	}
	if l.i > len(tg.caseLeases) {
		// The grant failed on this target; use an ID nobody granted so the
		// difference shows up as an error rather than a crash.
		return 0x0bad0000 + int64(l.i)
	}
	return tg.caseLeases[l.i-1]
}

// opt is an option of get, put and del.
type opt struct {
	desc string
	fn   func(tg *target) clientv3.OpOption
}

// fixed is an option that needs nothing from the target. mk is called for
// each use: some clientv3 options are closures that must not be shared
// between goroutines.
func fixed(desc string, mk func() clientv3.OpOption) opt {
	return opt{desc, func(*target) clientv3.OpOption { return mk() }}
}

func prefix() opt  { return fixed("--prefix", clientv3.WithPrefix) }
func fromKey() opt { return fixed("--from-key", clientv3.WithFromKey) }
func rangeEnd(e string) opt {
	return fixed("--range-end="+q(e), func() clientv3.OpOption { return clientv3.WithRange(e) })
}
func limit(n int64) opt {
	return fixed(fmt.Sprintf("--limit=%d", n), func() clientv3.OpOption { return clientv3.WithLimit(n) })
}
func keysOnly() opt     { return fixed("--keys-only", clientv3.WithKeysOnly) }
func countOnly() opt    { return fixed("--count-only", clientv3.WithCountOnly) }
func serializable() opt { return fixed("--serializable", clientv3.WithSerializable) }
func prevKV() opt       { return fixed("--prev-kv", clientv3.WithPrevKV) }
func ignoreValue() opt  { return fixed("--ignore-value", clientv3.WithIgnoreValue) }
func ignoreLease() opt  { return fixed("--ignore-lease", clientv3.WithIgnoreLease) }

func sortBy(target clientv3.SortTarget, order clientv3.SortOrder) opt {
	return fixed(fmt.Sprintf("--sort=%v,%v", target, order), func() clientv3.OpOption { return clientv3.WithSort(target, order) })
}

func revOpt(name string, r revArg, f func(int64) clientv3.OpOption) opt {
	return opt{fmt.Sprintf("--%s=%v", name, r), func(tg *target) clientv3.OpOption { return f(r.resolve(tg)) }}
}

func atRev(r revArg) opt     { return revOpt("rev", r, clientv3.WithRev) }
func minMod(r revArg) opt    { return revOpt("min-mod-rev", r, clientv3.WithMinModRev) }
func maxMod(r revArg) opt    { return revOpt("max-mod-rev", r, clientv3.WithMaxModRev) }
func minCreate(r revArg) opt { return revOpt("min-create-rev", r, clientv3.WithMinCreateRev) }
func maxCreate(r revArg) opt { return revOpt("max-create-rev", r, clientv3.WithMaxCreateRev) }

func withLease(l leaseArg) opt {
	return opt{"--lease=" + l.String(), func(tg *target) clientv3.OpOption {
		return clientv3.WithLease(clientv3.LeaseID(l.resolve(tg)))
	}}
}

func kvStep(verb, k string, extra []string, opts []opt, mk func(tg *target, o []clientv3.OpOption) clientv3.Op) step {
	parts := append([]string{verb, q(k)}, extra...)
	for _, o := range opts {
		parts = append(parts, o.desc)
	}
	return step{desc: strings.Join(parts, " "), op: func(tg *target) clientv3.Op {
		var oo []clientv3.OpOption
		for _, o := range opts {
			oo = append(oo, o.fn(tg))
		}
		return mk(tg, oo)
	}}
}

func put(k, v string, opts ...opt) step {
	return kvStep("put", k, []string{q(v)}, opts, func(_ *target, o []clientv3.OpOption) clientv3.Op {
		return clientv3.OpPut(k, v, o...)
	})
}

func get(k string, opts ...opt) step {
	return kvStep("get", k, nil, opts, func(_ *target, o []clientv3.OpOption) clientv3.Op {
		return clientv3.OpGet(k, o...)
	})
}

func del(k string, opts ...opt) step {
	return kvStep("del", k, nil, opts, func(_ *target, o []clientv3.OpOption) clientv3.Op {
		return clientv3.OpDelete(k, o...)
	})
}

// getStream is get through the streaming KV.RangeStream RPC (etcd 3.7); the
// chunks are merged into one RangeResponse before comparing.
func getStream(k string, opts ...opt) step {
	s := get(k, opts...)
	return step{desc: "get-stream" + strings.TrimPrefix(s.desc, "get"), run: func(ctx context.Context, tg *target) string {
		var oo []clientv3.OpOption
		for _, o := range opts {
			oo = append(oo, o.fn(tg))
		}
		ch, err := tg.cli.GetStream(ctx, k, oo...)
		if err != nil {
			return tg.render(nil, err)
		}
		resp, err := clientv3.GetStreamToGetResponse(ch)
		if err != nil {
			return tg.render(nil, err)
		}
		return tg.render((*pb.RangeResponse)(resp), nil)
	}}
}

// cmp is one compare of a txn.
type cmp struct {
	desc string
	fn   func(tg *target) clientv3.Cmp
}

func cmpOf(name, k, result string, v any, mk func(string) clientv3.Cmp) cmp {
	return cmp{fmt.Sprintf("%s(%s) %s %v", name, q(k), result, v), func(tg *target) clientv3.Cmp {
		switch x := v.(type) {
		case revArg:
			return clientv3.Compare(mk(k), result, x.resolve(tg))
		case leaseArg:
			return clientv3.Compare(mk(k), result, x.resolve(tg))
		default:
			return clientv3.Compare(mk(k), result, v)
		}
	}}
}

func cmpValue(k, result, v string) cmp {
	c := cmpOf("value", k, result, v, clientv3.Value)
	c.desc = fmt.Sprintf("value(%s) %s %s", q(k), result, q(v))
	return c
}
func cmpVersion(k, result string, v int64) cmp {
	return cmpOf("version", k, result, v, clientv3.Version)
}
func cmpCreate(k, result string, r revArg) cmp {
	return cmpOf("create", k, result, r, clientv3.CreateRevision)
}
func cmpMod(k, result string, r revArg) cmp { return cmpOf("mod", k, result, r, clientv3.ModRevision) }
func cmpLease(k, result string, l leaseArg) cmp {
	return cmpOf("lease", k, result, l, clientv3.LeaseValue)
}

// withPrefix and withRange turn a compare into one over a range of keys.
func (c cmp) withPrefix() cmp {
	fn := c.fn
	return cmp{c.desc + " --prefix", func(tg *target) clientv3.Cmp { return fn(tg).WithPrefix() }}
}

func (c cmp) withRange(end string) cmp {
	fn := c.fn
	return cmp{c.desc + " --range-end=" + q(end), func(tg *target) clientv3.Cmp { return fn(tg).WithRange(end) }}
}

func ifs(c ...cmp) []cmp   { return c }
func ops(s ...step) []step { return s }
func repeat(n int, f func(i int) step) []step {
	out := make([]step, n)
	for i := range out {
		out[i] = f(i)
	}
	return out
}

// txn builds a transaction; it can be nested as an operation of another txn.
func txn(cmps []cmp, then, els []step) step {
	desc := func(ss []step) string {
		var d []string
		for _, s := range ss {
			d = append(d, s.desc)
		}
		if len(d) > 6 {
			d = append(d[:3], fmt.Sprintf("... (%d ops)", len(ss)))
		}
		if len(d) == 0 {
			return "(nothing)"
		}
		return strings.Join(d, "; ")
	}
	var cd []string
	for _, c := range cmps {
		cd = append(cd, c.desc)
	}
	if len(cd) > 6 {
		cd = append(cd[:3], fmt.Sprintf("... (%d compares)", len(cmps)))
	}
	if len(cd) == 0 {
		cd = []string{"true"}
	}
	return step{
		desc: fmt.Sprintf("txn {if %s then %s else %s}", strings.Join(cd, " && "), desc(then), desc(els)),
		op: func(tg *target) clientv3.Op {
			cs := make([]clientv3.Cmp, len(cmps))
			for i, c := range cmps {
				cs[i] = c.fn(tg)
			}
			return clientv3.OpTxn(cs, buildOps(tg, then), buildOps(tg, els))
		},
	}
}

func buildOps(tg *target, ss []step) []clientv3.Op {
	out := make([]clientv3.Op, len(ss))
	for i, s := range ss {
		if s.op == nil {
			panic("compat: " + s.desc + " cannot be used inside a txn")
		}
		out[i] = s.op(tg)
	}
	return out
}

func compact(r revArg) step {
	return step{desc: fmt.Sprintf("compact %v --physical", r), run: func(ctx context.Context, tg *target) string {
		resp, err := tg.cli.Compact(ctx, r.resolve(tg), clientv3.WithCompactPhysical())
		return tg.render((*pb.CompactionResponse)(resp), err)
	}}
}

// q quotes a key or value for descriptions, shortening long ones.
func q(s string) string {
	if len(s) > 64 {
		return fmt.Sprintf("<%d bytes>", len(s))
	}
	return strconv.Quote(s)
}
