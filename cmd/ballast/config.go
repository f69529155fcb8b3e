package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

func msDuration(ms uint) time.Duration { return time.Duration(ms) * time.Millisecond }

// applyConfigFile reads etcd's YAML config format: keys are flag names.
// An unknown key is an error naming it.
func applyConfigFile(fs *flag.FlagSet, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--config-file: %w", err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("--config-file %s: %w", path, err)
	}
	// etcd nests the TLS settings: client-transport-security: {cert-file:
	// ...} is --cert-file, peer-transport-security: {...} --peer-cert-file.
	for section, prefix := range map[string]string{"client-transport-security": "", "peer-transport-security": "peer-"} {
		sub, ok := m[section]
		if !ok {
			continue
		}
		delete(m, section)
		if sub == nil {
			continue
		}
		fields, ok := sub.(map[string]any)
		if !ok {
			return fmt.Errorf("--config-file %s: %s must be a mapping", path, section)
		}
		for k, v := range fields {
			if _, dup := m[prefix+k]; dup {
				return fmt.Errorf("--config-file %s: %s.%s and %s%s both given", path, section, k, prefix, k)
			}
			m[prefix+k] = v
		}
	}
	for k, v := range m {
		if fs.Lookup(k) == nil {
			return fmt.Errorf("--config-file %s: unknown key %q", path, k)
		}
		var s string
		switch v := v.(type) {
		case nil:
			continue
		case []any:
			parts := make([]string, len(v))
			for i, p := range v {
				parts[i] = fmt.Sprint(p)
			}
			s = strings.Join(parts, ",")
		default:
			s = fmt.Sprint(v)
		}
		if err := fs.Set(k, s); err != nil {
			return fmt.Errorf("--config-file %s: %s: %w", path, k, err)
		}
	}
	return nil
}
