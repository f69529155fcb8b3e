package server

import (
	"context"
	"crypto"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/ballast-kv/ballast/mvcc"
)

// tokenProvider issues auth tokens (as mvcc's apply decides) and resolves
// the token a request carries to a user: etcd's simple and JWT tokens.
type tokenProvider interface {
	mvcc.Tokens
	// info resolves a token; authRev is the current auth revision, which
	// simple tokens take as theirs.
	info(ctx context.Context, token string, authRev uint64) (mvcc.AuthInfo, bool)
	// prefix is a fresh random prefix for a simple token ("" for JWT).
	prefix() string
}

// errInvalidAuthOpts is etcd's message for a bad --auth-token.
var errInvalidAuthOpts = errors.New("auth: invalid auth options")

// newTokenProvider parses --auth-token: "simple" or
// "jwt,pub-key=...,priv-key=...,sign-method=...,ttl=...".
func newTokenProvider(opts string, ttl time.Duration, waitApplied func(context.Context, uint64) error) (tokenProvider, error) {
	parts := strings.Split(opts, ",")
	kv := map[string]string{}
	for _, p := range parts[1:] {
		k, v, ok := strings.Cut(p, "=")
		if !ok || strings.Contains(v, "=") {
			return nil, fmt.Errorf("--auth-token %q: %w", opts, errInvalidAuthOpts)
		}
		if _, dup := kv[k]; dup {
			return nil, fmt.Errorf("--auth-token %q: duplicate %s: %w", opts, k, errInvalidAuthOpts)
		}
		kv[k] = v
	}
	switch parts[0] {
	case "simple", "":
		if ttl <= 0 {
			ttl = defaultTokenTTL
		}
		return &simpleTokens{ttl: ttl, waitApplied: waitApplied, now: time.Now, tokens: map[string]simpleToken{}}, nil
	case "jwt":
		return newJWTTokens(kv)
	}
	return nil, fmt.Errorf("--auth-token %q: unknown token type %q: %w", opts, parts[0], errInvalidAuthOpts)
}

// simpleTokens are etcd's "<16 random letters>.<raft index>" tokens, known
// to every member because each applies the Authenticate entry, and
// forgotten after ttl without use.
type simpleTokens struct {
	ttl         time.Duration
	waitApplied func(context.Context, uint64) error
	now         func() time.Time // injected by tests

	mu      sync.Mutex
	enabled bool
	tokens  map[string]simpleToken
	swept   time.Time // when expired tokens were last dropped
}

type simpleToken struct {
	user    string
	expires time.Time
}

func (t *simpleTokens) Assign(index uint64, user, prefix string, _ uint64) (string, error) {
	tok := prefix + "." + strconv.FormatUint(index, 10)
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	// Expired tokens are refused when used; sweeping them out of memory
	// once per TTL keeps a login (on the apply goroutine) from walking
	// every token each time.
	if now.Sub(t.swept) >= t.ttl {
		t.swept = now
		for k, v := range t.tokens {
			if now.After(v.expires) {
				delete(t.tokens, k)
			}
		}
	}
	t.tokens[tok] = simpleToken{user: user, expires: now.Add(t.ttl)}
	return tok, nil
}

func (t *simpleTokens) Invalidate(user string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, v := range t.tokens {
		if v.user == user {
			delete(t.tokens, k)
		}
	}
}

func (t *simpleTokens) SetEnabled(on bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.enabled && !on {
		t.tokens = map[string]simpleToken{}
	}
	t.enabled = on
}

func (t *simpleTokens) info(ctx context.Context, token string, authRev uint64) (mvcc.AuthInfo, bool) {
	_, idx, ok := strings.Cut(token, ".")
	if !ok || strings.Contains(idx, ".") {
		return mvcc.AuthInfo{}, false
	}
	index, err := strconv.ParseUint(idx, 10, 64)
	if err != nil {
		return mvcc.AuthInfo{}, false
	}
	// A token issued through another member may not be applied here yet.
	if t.waitApplied != nil {
		if err := t.waitApplied(ctx, index); err != nil {
			return mvcc.AuthInfo{}, false
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	st, ok := t.tokens[token]
	if !ok || t.now().After(st.expires) {
		delete(t.tokens, token)
		return mvcc.AuthInfo{}, false
	}
	st.expires = t.now().Add(t.ttl) // renewed on use
	t.tokens[token] = st
	return mvcc.AuthInfo{User: st.user, Revision: authRev}, true
}

func (t *simpleTokens) prefix() string {
	const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	b := make([]byte, 16)
	rand.Read(b)
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	return string(b)
}

// jwtTokens are signed tokens with the claims username, revision and exp:
// any member with the key checks them, none keeps them.
type jwtTokens struct {
	method jwt.SigningMethod
	sign   any // private key, nil when only verifying
	verify any
	ttl    time.Duration
}

// defaultTokenTTL is etcd's --auth-token-ttl default and its JWT ttl.
const defaultTokenTTL = 5 * time.Minute

func newJWTTokens(opts map[string]string) (*jwtTokens, error) {
	t := &jwtTokens{ttl: defaultTokenTTL}
	for k := range opts {
		switch k {
		case "pub-key", "priv-key", "sign-method", "ttl":
		default:
			return nil, fmt.Errorf("--auth-token: unknown jwt option %q: %w", k, errInvalidAuthOpts)
		}
	}
	if v := opts["ttl"]; v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return nil, fmt.Errorf("--auth-token: jwt ttl %q: %w", v, errInvalidAuthOpts)
		}
		t.ttl = d
	}
	t.method = jwt.GetSigningMethod(opts["sign-method"])
	if t.method == nil {
		return nil, fmt.Errorf("--auth-token: jwt sign-method %q: auth: invalid auth signature method", opts["sign-method"])
	}
	read := func(name string) ([]byte, error) {
		if opts[name] == "" {
			return nil, nil
		}
		b, err := os.ReadFile(opts[name])
		if err != nil {
			return nil, fmt.Errorf("--auth-token: jwt %s: %w", name, err)
		}
		return b, nil
	}
	pub, err := read("pub-key")
	if err != nil {
		return nil, err
	}
	priv, err := read("priv-key")
	if err != nil {
		return nil, err
	}
	if pub == nil && priv == nil {
		return nil, errors.New("--auth-token: jwt needs pub-key or priv-key: auth: missing key data")
	}
	var parsePriv func([]byte) (crypto.Signer, error)
	var parsePub func([]byte) (crypto.PublicKey, error)
	switch t.method.(type) {
	case *jwt.SigningMethodRSA, *jwt.SigningMethodRSAPSS:
		parsePriv = func(b []byte) (crypto.Signer, error) { return jwt.ParseRSAPrivateKeyFromPEM(b) }
		parsePub = func(b []byte) (crypto.PublicKey, error) { return jwt.ParseRSAPublicKeyFromPEM(b) }
	case *jwt.SigningMethodECDSA:
		parsePriv = func(b []byte) (crypto.Signer, error) { return jwt.ParseECPrivateKeyFromPEM(b) }
		parsePub = func(b []byte) (crypto.PublicKey, error) { return jwt.ParseECPublicKeyFromPEM(b) }
	case *jwt.SigningMethodEd25519:
		parsePriv = func(b []byte) (crypto.Signer, error) {
			k, err := jwt.ParseEdPrivateKeyFromPEM(b)
			if err != nil {
				return nil, err
			}
			return k.(crypto.Signer), nil
		}
		parsePub = jwt.ParseEdPublicKeyFromPEM
	default:
		// HMAC: priv-key is the shared secret.
		if priv == nil {
			return nil, errors.New("--auth-token: jwt HMAC needs priv-key: auth: missing key data")
		}
		t.sign, t.verify = priv, priv
		return t, nil
	}
	var signer crypto.Signer
	if priv != nil {
		if signer, err = parsePriv(priv); err != nil {
			return nil, fmt.Errorf("--auth-token: jwt priv-key: %w", err)
		}
		t.sign, t.verify = signer, signer.Public()
	}
	if pub != nil {
		k, err := parsePub(pub)
		if err != nil {
			return nil, fmt.Errorf("--auth-token: jwt pub-key: %w", err)
		}
		if signer != nil && !k.(interface{ Equal(crypto.PublicKey) bool }).Equal(signer.Public()) {
			return nil, errors.New("--auth-token: auth: public and private keys don't match")
		}
		t.verify = k
	}
	return t, nil
}

func (t *jwtTokens) Assign(_ uint64, user, _ string, authRev uint64) (string, error) {
	if t.sign == nil { // only a public key: this member verifies, never signs
		return "", errors.New("auth: token signing attempted with verify-only key")
	}
	tok := jwt.NewWithClaims(t.method, jwt.MapClaims{
		"username": user,
		"revision": authRev,
		"exp":      time.Now().Add(t.ttl).Unix(),
	})
	return tok.SignedString(t.sign)
}

func (t *jwtTokens) Invalidate(string) {}
func (t *jwtTokens) SetEnabled(bool)   {}
func (t *jwtTokens) prefix() string    { return "" }

func (t *jwtTokens) info(_ context.Context, token string, _ uint64) (mvcc.AuthInfo, bool) {
	parsed, err := jwt.Parse(token, func(*jwt.Token) (any, error) { return t.verify, nil },
		jwt.WithValidMethods([]string{t.method.Alg()}))
	if err != nil || !parsed.Valid {
		return mvcc.AuthInfo{}, false
	}
	claims, ok := parsed.Claims.(jwt.MapClaims)
	if !ok {
		return mvcc.AuthInfo{}, false
	}
	user, ok := claims["username"].(string)
	rev, ok2 := claims["revision"].(float64)
	if !ok || !ok2 {
		return mvcc.AuthInfo{}, false
	}
	return mvcc.AuthInfo{User: user, Revision: uint64(rev)}, true
}
