package compat

// The scripted cases. Each uses its own key prefix so that a failure is easy
// to read, but nothing depends on it: both servers see the same sequence of
// requests, so even reads over the whole key space must agree. Revisions are
// written relative to the start of the case (@n is the n-th write of the
// case), leases by their order of grant in the case (L1, L2, ...).

import (
	"context"
	"fmt"
	"strings"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
)

var (
	sortTargets = []clientv3.SortTarget{clientv3.SortByKey, clientv3.SortByVersion,
		clientv3.SortByCreateRevision, clientv3.SortByModRevision, clientv3.SortByValue}
	sortOrders = []clientv3.SortOrder{clientv3.SortNone, clientv3.SortAscend, clientv3.SortDescend}
	cmpResults = []string{"=", "!=", ">", "<"}
)

// unknownLease is a lease ID that no case grants.
const unknownLease = 0x1234abcd

var cases = []compatCase{
	{"kv/put-get", ops(
		put("pg/a", "1"),
		get("pg/a"),
		put("pg/a", "2", prevKV()),
		put("pg/b", "1", prevKV()),
		get("pg/a", atRev(at(1))),
		get("pg/a", atRev(at(2))),
		get("pg/a", atRev(at(0))),
		get("pg/missing"),
		get("pg/a", serializable()),
		get("pg/a", atRev(at(1)), serializable()),
		put("pg/a", ""),
		get("pg/a"),
		put("pg/\x00\xff", "v\x00\xfe"),
		get("pg/\x00\xff"),
		get("pg/", prefix()),
		getStream("pg/", prefix()),
		getStream("pg/a"),
		// Keys at the end of the key space: the prefix of "\xff\xff" has
		// no end key, so it runs to the end.
		put("\xff", "x"), put("\xff\xff", "y"), put("\xff\xff\x01", "z"),
		get("\xff", prefix()),
		get("\xff\xff", prefix()),
		get("\xff\xff", fromKey(), keysOnly()),
		del("\xff", prefix(), prevKV()),
	)},

	{"kv/range", ops(
		put("rg/a", "a"), put("rg/b", "b"), put("rg/c", "c"), put("rg/d", "d"), put("rg/e", "e"),
		put("rg0", "just past the prefix"),
		get("rg/a", rangeEnd("rg/c")),
		get("rg/", prefix()),
		get("rg/c", fromKey(), limit(3)),
		get("rg/c", fromKey(), countOnly()),
		get("\x00", fromKey(), countOnly()),
		get("\x00", fromKey(), keysOnly(), limit(3)),
		get("", prefix(), countOnly()),
		get("rg/", prefix(), limit(2)),
		get("rg/", prefix(), limit(5)),
		get("rg/", prefix(), limit(6)),
		get("rg/", prefix(), limit(0)),
		get("rg/", prefix(), keysOnly()),
		get("rg/", prefix(), countOnly()),
		get("rg/", prefix(), countOnly(), limit(1)),
		get("rg/", prefix(), keysOnly(), countOnly()),
		get("rg/c", rangeEnd("rg/a")),
		get("rg/c", rangeEnd("rg/c")),
		get("rg/c", rangeEnd("rg/c\x00")),
		get("rg/", prefix(), atRev(at(3))),
		get("rg/", prefix(), atRev(at(3)), countOnly()),
		get("rg/", prefix(), atRev(at(3)), limit(1)),
		getStream("rg/", prefix(), limit(2)),
		getStream("rg/", prefix(), countOnly()),
	)},

	{"kv/sort-and-filters", append(ops(
		// Distinct values, versions, create and mod revisions, so every sort
		// order is fully determined: versions c1 a2 b3 d4, values d<b<c<a,
		// create c<a<d<b, mod c<a<b<d.
		put("so/c", "3"), put("so/a", "4"), put("so/d", "1"), put("so/b", "2"),
		put("so/a", "4"), put("so/b", "2"), put("so/b", "2"),
		put("so/d", "1"), put("so/d", "1"), put("so/d", "1"),
		get("so/", prefix(), minMod(at(5))),
		get("so/", prefix(), maxMod(at(5))),
		get("so/", prefix(), minMod(at(2)), maxMod(at(7))),
		get("so/", prefix(), minCreate(at(2))),
		get("so/", prefix(), maxCreate(at(3))),
		get("so/", prefix(), minCreate(at(2)), maxCreate(at(3))),
		get("so/", prefix(), minMod(at(5)), limit(1)),
		get("so/", prefix(), minMod(at(5)), countOnly()),
		get("so/", prefix(), minMod(at(5)), keysOnly()),
		get("so/", prefix(), minMod(at(2)), sortBy(clientv3.SortByValue, clientv3.SortDescend), limit(2)),
		get("so/", prefix(), maxMod(at(7)), atRev(at(7))),
		get("so/", prefix(), minMod(at(100))),
	), sortSteps()...)},

	{"kv/history", ops(
		put("hi/k", "v1"),
		put("hi/k", "v2"),
		put("hi/other", "x"),
		del("hi/k"),
		put("hi/k", "v3"),
		get("hi/k", atRev(at(1))),
		get("hi/k", atRev(at(2))),
		get("hi/k", atRev(at(3))),
		get("hi/k", atRev(at(4))),
		get("hi/k", atRev(at(5))),
		get("hi/k"),
		get("hi/", prefix(), atRev(at(4))),
		get("hi/", prefix(), atRev(at(2)), countOnly()),
		put("hi/k", "v4", prevKV()),
		del("hi/k", prevKV()),
		get("hi/k", atRev(at(6))),
		get("hi/", prefix(), atRev(at(7))),
		get("hi/", prefix(), atRev(absRev(0))),
	)},

	{"kv/delete", ops(
		put("de/a", "1"), put("de/b", "2"), put("de/c", "3"), put("de/d", "4"), put("de/e", "5"), put("de/x", "6"),
		del("de/a", prevKV()),
		del("de/a"),
		del("de/a", prevKV()),
		get("de/a"),
		del("de/b", rangeEnd("de/d"), prevKV()),
		del("de/", prefix()),
		get("de/", prefix()),
		del("de/zzz", prevKV()),
		put("de/a", "again"),
		get("de/a"),
		del("de/a", rangeEnd("de/a")),
		get("de/", prefix(), atRev(at(6))),
	)},

	{"kv/delete-from-key", ops(
		// Nothing else lives at or after "zz/" in the key space.
		put("zz/a", "1"), put("zz/b", "2"), put("zz/c", "3"),
		del("zz/b", fromKey(), prevKV()),
		get("zz/", prefix()),
		del("zz/", fromKey()),
		get("zz/", prefix()),
	)},

	{"kv/put-options", ops(
		grant(600), grant(600),
		put("po/a", "1", withLease(lease(1))),
		get("po/a"),
		put("po/a", "2", ignoreLease(), prevKV()),
		put("po/a", "", ignoreValue(), prevKV()),
		get("po/a"),
		put("po/a", "", ignoreValue(), ignoreLease()),
		put("po/a", "3", withLease(lease(2)), prevKV()),
		put("po/a", "4"),
		get("po/a"),
		timeToLive(lease(1), true),
		timeToLive(lease(2), true),
		put("po/missing", "", ignoreValue()),
		put("po/a", "x", ignoreValue()),
		put("po/a", "x", ignoreLease(), withLease(lease(1))),
		put("po/a", "", ignoreValue(), withLease(lease(1))),
		put("po/b", "1", withLease(rawLease(unknownLease))),
		put("po/missing", "", ignoreLease()),
		get("po/", prefix()),
		revoke(lease(1)), revoke(lease(2)),
	)},

	{"txn/compare-targets", append(ops(
		grant(600),
		put("tc/a", "m"),
		put("tc/b", "x", withLease(lease(1))),
		put("tc/a", "m"),
		// tc/a: value "m", version 2, create @1, mod @3, no lease.
		// tc/b: value "x", version 1, create @2, mod @2, lease L1.
	), compareSteps()...)},

	{"txn/range-compare", ops(
		put("tr/a", "1"), put("tr/b", "1"), put("tr/c", "2"),
		txn(ifs(cmpValue("tr/", "=", "1").withPrefix()), ops(get("tr/a")), ops(get("tr/c"))),
		txn(ifs(cmpValue("tr/a", "=", "1").withRange("tr/c")), ops(get("tr/a")), ops(get("tr/c"))),
		txn(ifs(cmpValue("tr/", "<", "3").withPrefix()), ops(get("tr/a")), ops(get("tr/c"))),
		txn(ifs(cmpVersion("tr/", ">", 0).withPrefix()), ops(get("tr/a")), ops(get("tr/c"))),
		txn(ifs(cmpMod("tr/", "<", at(3)).withPrefix()), ops(get("tr/a")), ops(get("tr/c"))),
		txn(ifs(cmpMod("tr/", "<", at(4)).withPrefix()), ops(get("tr/a")), ops(get("tr/c"))),
		txn(ifs(cmpCreate("tr/", ">", at(0)).withPrefix()), ops(get("tr/a")), ops(get("tr/c"))),
		txn(ifs(cmpLease("tr/", "=", rawLease(0)).withPrefix()), ops(get("tr/a")), ops(get("tr/c"))),
		// Compares over an empty range.
		txn(ifs(cmpValue("tr/none/", "=", "").withPrefix()), ops(get("tr/a")), ops(get("tr/c"))),
		txn(ifs(cmpValue("tr/none/", "!=", "x").withPrefix()), ops(get("tr/a")), ops(get("tr/c"))),
		txn(ifs(cmpVersion("tr/none/", "=", 0).withPrefix()), ops(get("tr/a")), ops(get("tr/c"))),
		txn(ifs(cmpCreate("tr/none/", "=", absRev(0)).withPrefix()), ops(get("tr/a")), ops(get("tr/c"))),
		txn(ifs(cmpMod("tr/none/", ">", absRev(0)).withPrefix()), ops(get("tr/a")), ops(get("tr/c"))),
		txn(ifs(cmpVersion("tr/a", "=", 1).withRange("tr/a")), ops(get("tr/a")), ops(get("tr/c"))),
		// From the key to the end of the key space.
		txn(ifs(cmpVersion("tr/b", ">", 0).withRange("\x00")), ops(get("tr/a")), ops(get("tr/c"))),
		txn(ifs(cmpValue("tr/b", ">", "0").withRange("\x00")), ops(get("tr/a")), ops(get("tr/c"))),
		txn(ifs(cmpValue("tr/", "=", "1").withPrefix(), cmpValue("tr/c", "=", "2")), ops(get("tr/a")), ops(get("tr/c"))),
		txn(ifs(cmpValue("tr/a", "=", "1"), cmpValue("tr/c", "=", "2")), ops(get("tr/", prefix())), nil),
	)},

	{"txn/branches", ops(
		txn(nil, nil, nil),
		txn(ifs(cmpValue("tb/a", "=", "")), ops(put("tb/a", "then")), ops(put("tb/a", "else"))),
		txn(ifs(cmpVersion("tb/a", "=", 1)),
			ops(put("tb/a", "x"), get("tb/a"), put("tb/b", "y"), del("tb/c"), get("tb/", prefix())),
			nil),
		txn(nil, ops(get("tb/a"), get("tb/", prefix(), countOnly())), nil),
		txn(ifs(cmpValue("tb/a", "=", "nope")), nil, ops(get("tb/a"), get("tb/b", prevKV()))),
		txn(nil, ops(put("tb/c", "1", prevKV()), del("tb/b", prevKV()), get("tb/", prefix())), nil),
		txn(nil, ops(get("tb/a", atRev(at(1))), get("tb/", prefix(), atRev(at(2)))), nil),
		txn(ifs(cmpMod("tb/a", ">", at(100))), ops(put("tb/x", "1")), ops(put("tb/y", "1"), del("tb/a", prevKV()))),
		txn(ifs(cmpValue("tb/y", "=", "1")), ops(del("tb/", prefix(), prevKV())), nil),
		txn(nil, ops(put("tb/p", "1"), put("tb/q", "2", prevKV()), get("tb/", prefix(), limit(1)), del("tb/zzz")), nil),
		txn(ifs(cmpValue("tb/p", "=", "1")), nil, nil),
		get("tb/", prefix()),
	)},

	{"txn/nested", ops(
		put("tn/a", "1"),
		// Every compare of a nested txn is evaluated before any write: the
		// inner compare does not see the outer put of tn/b.
		txn(ifs(cmpValue("tn/a", "=", "1")),
			ops(put("tn/b", "1"),
				txn(ifs(cmpValue("tn/b", "=", "1")),
					ops(put("tn/c", "then"), get("tn/", prefix())),
					ops(put("tn/d", "else"), get("tn/", prefix())))),
			ops(put("tn/e", "outer else"))),
		txn(ifs(cmpValue("tn/a", "=", "2")),
			ops(put("tn/e", "outer then")),
			ops(txn(ifs(cmpVersion("tn/b", "=", 1)), ops(put("tn/f", "1")), nil), get("tn/f"))),
		txn(nil, ops(txn(nil, ops(txn(ifs(cmpVersion("tn/f", ">", 0)), ops(get("tn/f"), put("tn/g", "deep")), nil)), nil)), nil),
		txn(nil, ops(txn(nil, ops(get("tn/", prefix(), countOnly())), nil)), nil),
		// Different branches may write the same key.
		txn(nil, ops(txn(ifs(cmpValue("tn/a", "=", "1")), ops(put("tn/h", "t")), ops(put("tn/h", "e")))), nil),
		// The same key written at two levels of one path is a duplicate.
		txn(nil, ops(put("tn/a", "x"), txn(nil, ops(put("tn/a", "y")), nil)), nil),
		txn(nil, ops(del("tn/", prefix()), txn(nil, ops(put("tn/a", "y")), nil)), nil),
		txn(nil, ops(put("tn/a", "x"), txn(nil, nil, ops(put("tn/a", "y")))), nil),
		get("tn/", prefix()),
	)},

	{"txn/limits", ops(
		txn(nil, puts("tl/", 128), nil),
		txn(nil, puts("tl/", 129), nil),
		txn(nil, nil, puts("tl/", 129)),
		txn(many(129, func(i int) cmp { return cmpVersion(fmt.Sprintf("tl/%03d", i), ">", 0) }), nil, nil),
		txn(nil, repeat(129, func(i int) step { return get(fmt.Sprintf("tl/%03d", i)) }), nil),
		// Nested ops count towards the limit.
		txn(nil, append(puts("tl/", 63), txn(nil, puts("tl/n/", 64), nil)), nil),
		txn(nil, append(puts("tl/", 64), txn(nil, puts("tl/n/", 64), nil)), nil),
		txn(nil, append(puts("tl/", 100), txn(nil, puts("tl/n/", 100), nil)), nil),
		txn(nil, ops(put("tl/a", "1"), put("tl/a", "2")), nil),
		txn(nil, ops(put("tl/a", "1"), del("tl/", prefix())), nil),
		txn(nil, ops(del("tl/a"), put("tl/a", "1")), nil),
		txn(nil, ops(del("tl/a"), del("tl/", prefix())), nil),
		txn(nil, ops(put("tl/a", "1"), get("tl/a")), nil),
		get("tl/", prefix(), countOnly()),
	)},

	{"errors/kv", ops(
		put("", "v"),
		get(""),
		del(""),
		txn(nil, ops(put("", "v")), nil),
		txn(nil, ops(get("")), nil),
		txn(ifs(cmpVersion("", "=", 0)), nil, nil),
		put("er/a", "1"),
		get("er/a", atRev(at(1000))),
		get("er/a", atRev(at(2))),
		get("er/a", atRev(at(1))),
		getStream("er/a", atRev(at(1000))),
		txn(nil, ops(get("er/a", atRev(at(1000)))), nil),
		put("er/big", strings.Repeat("x", 1600*1024)),
		txn(nil, ops(put("er/big", strings.Repeat("x", 1600*1024))), nil),
		put("er/big", strings.Repeat("x", 1024*1024)),
		get("er/big", keysOnly()),
		del("er/big"),
		put("er/b", "1", withLease(rawLease(unknownLease))),
		txn(nil, ops(put("er/b", "1", withLease(rawLease(unknownLease)))), nil),
		get("er/", prefix()),
	)},

	{"errors/raw", ops(
		// Requests clientv3 would not send as written.
		put("ra/a", "1"), put("ra/b", "2"),
		rawRange("sort_order=5", &pb.RangeRequest{Key: []byte("ra/a"), SortOrder: 5}),
		rawRange("sort_target=9", &pb.RangeRequest{Key: []byte("ra/a"), SortTarget: 9, SortOrder: pb.RangeRequest_ASCEND}),
		rawRange("revision=-1", &pb.RangeRequest{Key: []byte("ra/a"), Revision: -1}),
		rawRange("limit=-1", &pb.RangeRequest{Key: []byte("ra/"), RangeEnd: []byte("ra0"), Limit: -1}),
		rawRange("range_end<key", &pb.RangeRequest{Key: []byte("ra/b"), RangeEnd: []byte("ra/a")}),
		rawRange("sort=key,ascend limit=1", &pb.RangeRequest{Key: []byte("ra/"), RangeEnd: []byte("ra0"),
			SortOrder: pb.RangeRequest_ASCEND, SortTarget: pb.RangeRequest_KEY, Limit: 1}),
		rawRange("min_mod_revision=-5 max_create_revision=-5", &pb.RangeRequest{Key: []byte("ra/"), RangeEnd: []byte("ra0"),
			MinModRevision: -5, MaxCreateRevision: -5}),
		rawRange("empty key with range_end", &pb.RangeRequest{RangeEnd: []byte("ra0")}),
		rawDel("range_end<key", &pb.DeleteRangeRequest{Key: []byte("ra/b"), RangeEnd: []byte("ra/a"), PrevKv: true}),
		rawDel("empty key with range_end", &pb.DeleteRangeRequest{RangeEnd: []byte("ra/")}),
		rawPut("ignore_value ignore_lease on a missing key", &pb.PutRequest{Key: []byte("ra/missing"), IgnoreValue: true, IgnoreLease: true}),
		rawPut("lease=-1", &pb.PutRequest{Key: []byte("ra/c"), Lease: -1}),
		rawTxn("compare result=9", &pb.TxnRequest{Compare: []*pb.Compare{{Key: []byte("ra/a"),
			Target: pb.Compare_VALUE, Result: 9, TargetUnion: &pb.Compare_Value{Value: []byte("1")}}}}),
		rawTxn("compare target=9", &pb.TxnRequest{Compare: []*pb.Compare{{Key: []byte("ra/a"),
			Target: 9, Result: pb.Compare_EQUAL, TargetUnion: &pb.Compare_Value{Value: []byte("1")}}}}),
		rawTxn("compare version without a value", &pb.TxnRequest{Compare: []*pb.Compare{{Key: []byte("ra/a"),
			Target: pb.Compare_VERSION, Result: pb.Compare_EQUAL}},
			Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte("ra/a")}}}}}),
		rawTxn("compare value against a version", &pb.TxnRequest{Compare: []*pb.Compare{{Key: []byte("ra/a"),
			Target: pb.Compare_VALUE, Result: pb.Compare_EQUAL, TargetUnion: &pb.Compare_Version{Version: 1}}}}),
		rawTxn("empty request op", &pb.TxnRequest{Success: []*pb.RequestOp{{}}}),
		rawTxn("range op without a request", &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestRange{}}}}),
		rawTxn("put op without a request", &pb.TxnRequest{Failure: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{}}}}),
		rawCompact(0),
		rawCompact(-1),
		raw("lease grant id=-12345", func(ctx context.Context, tg *target) (proto.Message, error) {
			return leaseClient(tg).LeaseGrant(ctx, &pb.LeaseGrantRequest{ID: -12345, TTL: 3600})
		}),
		revoke(rawLease(-12345)),
		raw("lease revoke id=0", func(ctx context.Context, tg *target) (proto.Message, error) {
			return leaseClient(tg).LeaseRevoke(ctx, &pb.LeaseRevokeRequest{})
		}),
		raw("lease timetolive id=0", func(ctx context.Context, tg *target) (proto.Message, error) {
			return leaseClient(tg).LeaseTimeToLive(ctx, &pb.LeaseTimeToLiveRequest{})
		}),
		get("ra/", prefix()),
	)},

	{"leases/keys", ops(
		grant(600), grant(600),
		put("lk/a", "1", withLease(lease(1))),
		put("lk/b", "1", withLease(lease(1))),
		put("lk/a", "2", withLease(lease(2))),
		del("lk/b"),
		timeToLive(lease(1), true),
		timeToLive(lease(2), true),
		txn(nil, ops(put("lk/c", "1", withLease(lease(1))), put("lk/d", "1", withLease(lease(2))), put("lk/e", "1", withLease(lease(2)))), nil),
		timeToLive(lease(1), true),
		timeToLive(lease(2), true),
		revoke(lease(2)),
		get("lk/", prefix()),
		watch("lk/", wPrefix(), wStart(at(1)), wPrevKV()),
		put("lk/f", "1", withLease(lease(1))),
		put("lk/f", "2", ignoreLease(), prevKV()),
		timeToLive(lease(1), true),
		revoke(lease(1)),
		get("lk/", prefix()),
	)},

	{"leases/basic", ops(
		grant(600), grant(1200),
		timeToLive(lease(1), false),
		timeToLive(lease(1), true),
		put("le/a", "1", withLease(lease(1))),
		put("le/b", "1", withLease(lease(1))),
		put("le/c", "1", withLease(lease(2))),
		timeToLive(lease(1), true),
		timeToLive(lease(2), true),
		keepAliveOnce(lease(1)),
		leases(),
		revoke(lease(1)),
		get("le/", prefix()),
		timeToLive(lease(1), true),
		revoke(lease(1)),
		keepAliveOnce(lease(1)),
		timeToLive(rawLease(unknownLease), false),
		revoke(rawLease(unknownLease)),
		grantID(0x7777, 600),
		grantID(0x7777, 600),
		timeToLive(lease(3), true),
		revoke(rawLease(0x7777)),
		grant(9000000001),
		grant(9000000000),
		revoke(lease(4)),
		// TTLs below the minimum (etcd raises them internally).
		grant(1), revoke(lease(5)),
		grant(0), revoke(lease(6)),
		grant(-1), revoke(lease(7)),
		leases(),
		revoke(lease(2)),
		get("le/", prefix()),
	)},

	{"leases/expiry", ops(
		grant(2),
		put("lx/a", "1", withLease(lease(1))),
		put("lx/b", "1", withLease(lease(1))),
		waitGone("lx/a", 30*time.Second),
		get("lx/", prefix()),
		watch("lx/", wPrefix(), wStart(at(1)), wPrevKV()),
		timeToLive(lease(1), true),
		revoke(lease(1)),
	)},

	{"watch/history", ops(
		put("wa/a", "1"), put("wa/b", "1"), put("wa/a", "2"), del("wa/b"), put("wa/c", "1"), put("wb/x", "outside"),
		txn(nil, ops(put("wa/d", "1"), put("wa/e", "1"), del("wa/c")), nil),
		watch("wa/", wPrefix(), wStart(at(1))),
		watch("wa/a", wStart(at(1))),
		watch("wa/a", wRangeEnd("wa/c"), wStart(at(1))),
		watch("wa/", wPrefix(), wStart(at(1)), wPrevKV()),
		watch("wa/", wPrefix(), wStart(at(1)), wNoPut()),
		watch("wa/", wPrefix(), wStart(at(1)), wNoDelete()),
		watch("wa/", wPrefix(), wStart(at(1)), wNoPut(), wNoDelete()),
		watch("wa/", wPrefix(), wStart(at(3))),
		watch("wa/", wPrefix(), wStart(at(6))),
		watch("wa/", wPrefix(), wStart(at(7)), wPrevKV()),
		watch("wa/c", wFromKey(), wStart(at(1))),
	)},

	{"watch/live", ops(
		put("wl/a", "0"),
		watch("wl/", wPrefix(), wDuring(
			put("wl/a", "1"),
			put("wl/b", "1"),
			del("wl/a"),
			put("wx/outside", "1"),
			txn(nil, ops(put("wl/c", "1"), put("wl/d", "1"), del("wl/b")), nil),
			del("wl/", prefix()),
		)),
		watch("wl/", wPrefix(), wPrevKV(), wDuring(
			put("wl/a", "1"),
			put("wl/a", "2"),
			del("wl/a"),
		)),
		watch("wl/a", wNoDelete(), wCancel(), wDuring(put("wl/a", "3"), del("wl/a"))),
		// Starts two revisions ahead: @13 and @14 are not seen.
		watch("wl/", wPrefix(), wStart(at(15)), wDuring(put("wl/a", "4"), put("wl/a", "5"), put("wl/a", "6"), put("wl/b", "6"))),
		watch("wl/a", wStart(at(1)), wCancel()),
	)},

	{"watch/stream", ops(
		put("ws/a", "1"), put("ws/b", "1"),
		watchStream("several watches, a client-chosen and a duplicate ID, cancels",
			[]wspec{
				{req: &pb.WatchCreateRequest{Key: []byte("ws/a")}, start: &[]revArg{at(1)}[0]},
				{req: &pb.WatchCreateRequest{Key: []byte("ws/"), RangeEnd: []byte("ws0"), WatchId: 7}, start: &[]revArg{at(1)}[0]},
				{req: &pb.WatchCreateRequest{Key: []byte("ws/b"), WatchId: 7}},
				{req: &pb.WatchCreateRequest{Key: []byte("ws/b"), PrevKv: true}},
				{req: &pb.WatchCreateRequest{Key: []byte("ws/a"), Filters: []pb.WatchCreateRequest_FilterType{pb.WatchCreateRequest_NOPUT}}},
			},
			ops(put("ws/a", "2"), put("ws/b", "2"), del("ws/a")),
			[]int64{7, 99, 1}),
		watchStream("start revision -1",
			[]wspec{{req: &pb.WatchCreateRequest{Key: []byte("ws/a"), StartRevision: -1}}}, nil, nil),
		watchStream("empty key",
			[]wspec{{req: &pb.WatchCreateRequest{}}}, ops(put("ws/c", "1")), nil),
		watchStream("empty key to the end",
			[]wspec{{req: &pb.WatchCreateRequest{RangeEnd: []byte{0}}}}, ops(put("ws/c", "2")), nil),
		watchStream("unknown filter",
			[]wspec{{req: &pb.WatchCreateRequest{Key: []byte("ws/c"), Filters: []pb.WatchCreateRequest_FilterType{7}}}},
			ops(put("ws/c", "3"), del("ws/c")), nil),
		// Two events of 1 MiB, with and without fragmenting.
		put("ws/big/1", strings.Repeat("1", 1<<20)),
		put("ws/big/2", strings.Repeat("2", 1<<20)),
		watchStream("large events, fragmented",
			[]wspec{{req: &pb.WatchCreateRequest{Key: []byte("ws/big/"), RangeEnd: []byte("ws/big0"), Fragment: true}, start: &[]revArg{at(1)}[0]}},
			nil, nil),
		watchStream("large events",
			[]wspec{{req: &pb.WatchCreateRequest{Key: []byte("ws/big/"), RangeEnd: []byte("ws/big0"), PrevKv: true}, start: &[]revArg{at(1)}[0]}},
			ops(del("ws/big/", prefix())), nil),
	)},

	{"restart", ops(
		// State that must survive a restart: data, history, the compaction
		// revision, leases and their keys, and the revision counter.
		put("rs/a", "1"), put("rs/a", "2"), put("rs/x", "1"), del("rs/x"),
		grant(600),
		put("rs/b", "1", withLease(lease(1))),
		compact(at(2)),
		restart(),
		get("rs/", prefix()),
		get("rs/a", atRev(at(2))),
		get("rs/a", atRev(at(1))),
		compact(at(2)),
		timeToLive(lease(1), true),
		watch("rs/", wPrefix(), wStart(at(2)), wPrevKV()),
		watch("rs/", wPrefix(), wStart(at(1))),
		put("rs/c", "1"),
		revoke(lease(1)),
		get("rs/", prefix()),
	)},

	{"compaction", ops(
		put("cp/a", "1"), put("cp/a", "2"), put("cp/a", "3"), put("cp/a", "4"), put("cp/a", "5"),
		put("cp/b", "1"),
		compact(at(3)),
		get("cp/a", atRev(at(2))),
		get("cp/a", atRev(at(2)), serializable()),
		get("cp/a", atRev(at(3))),
		get("cp/", prefix(), atRev(at(4))),
		getStream("cp/a", atRev(at(2))),
		txn(nil, ops(get("cp/a", atRev(at(1)))), nil),
		compact(at(2)),
		compact(at(3)),
		compact(at(1000)),
		watch("cp/", wPrefix(), wStart(at(1))),
		watch("cp/", wPrefix(), wStart(at(2)), wPrevKV()),
		watch("cp/", wPrefix(), wStart(at(3))),
		watch("cp/", wPrefix(), wStart(at(4)), wPrevKV()),
		del("cp/", prefix()),
		compact(at(7)),
		get("cp/", prefix(), atRev(at(6))),
		get("cp/", prefix(), atRev(at(7))),
		get("cp/", prefix()),
		watch("cp/", wPrefix(), wStart(at(7))),
	)},
}

// sortSteps reads so/ with every sort target and order, with and without a
// limit.
func sortSteps() []step {
	var out []step
	for _, target := range sortTargets {
		for _, order := range sortOrders {
			out = append(out,
				get("so/", prefix(), sortBy(target, order)),
				get("so/", prefix(), sortBy(target, order), limit(2)))
		}
	}
	return out
}

// compareSteps compares tc/a, tc/b and a missing key with every compare
// target and result against values below, at and above theirs.
func compareSteps() []step {
	type operand struct {
		name string
		mk   func(k, r string) cmp
	}
	// For each target: values on both sides of tc/a's and tc/b's.
	operands := []operand{
		{"value", func(k, r string) cmp { return cmpValue(k, r, "m") }},
		{"value", func(k, r string) cmp { return cmpValue(k, r, "a") }},
		{"value", func(k, r string) cmp { return cmpValue(k, r, "z") }},
		{"value", func(k, r string) cmp { return cmpValue(k, r, "") }},
		{"version", func(k, r string) cmp { return cmpVersion(k, r, 0) }},
		{"version", func(k, r string) cmp { return cmpVersion(k, r, 1) }},
		{"version", func(k, r string) cmp { return cmpVersion(k, r, 2) }},
		{"create", func(k, r string) cmp { return cmpCreate(k, r, absRev(0)) }},
		{"create", func(k, r string) cmp { return cmpCreate(k, r, at(1)) }},
		{"create", func(k, r string) cmp { return cmpCreate(k, r, at(2)) }},
		{"mod", func(k, r string) cmp { return cmpMod(k, r, at(2)) }},
		{"mod", func(k, r string) cmp { return cmpMod(k, r, at(3)) }},
		{"mod", func(k, r string) cmp { return cmpMod(k, r, absRev(0)) }},
		{"lease", func(k, r string) cmp { return cmpLease(k, r, lease(1)) }},
		{"lease", func(k, r string) cmp { return cmpLease(k, r, rawLease(0)) }},
	}
	var out []step
	for _, k := range []string{"tc/a", "tc/b", "tc/missing"} {
		for _, o := range operands {
			for _, r := range cmpResults {
				out = append(out, txn(ifs(o.mk(k, r)), ops(get("tc/a", keysOnly())), ops(get("tc/b", keysOnly()))))
			}
		}
	}
	// One compare that writes in each branch.
	out = append(out,
		txn(ifs(cmpMod("tc/a", "=", at(3)), cmpLease("tc/b", "=", lease(1))),
			ops(put("tc/a", "then", prevKV())), ops(put("tc/a", "else", prevKV()))),
		txn(ifs(cmpMod("tc/a", "=", at(3))),
			ops(put("tc/a", "then", prevKV())), ops(put("tc/a", "else", prevKV()))),
		get("tc/", prefix()),
	)
	return out
}

// puts returns n puts of distinct keys under prefix p.
func puts(p string, n int) []step {
	return repeat(n, func(i int) step { return put(fmt.Sprintf("%s%03d", p, i), "v") })
}

func many(n int, f func(i int) cmp) []cmp {
	out := make([]cmp, n)
	for i := range out {
		out[i] = f(i)
	}
	return out
}
