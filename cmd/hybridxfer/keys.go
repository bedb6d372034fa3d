package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/hybridxfer/hybridxfer/statexfer/zmqchan"
	"github.com/spf13/cobra"
)

// clusterKeyBytes is the size of a cluster key written by `keys cluster`.
const clusterKeyBytes = 32

func keysCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "keys",
		Short: "Generate the keys of an authenticated deployment (CURVE key pairs, the cluster key)",
		Long: `keys writes new random keys to files. It never overwrites an existing file
unless --force is given.

  keys curve --out PREFIX    a ZeroMQ CURVE key pair for the handshake side channel:
                             PREFIX.key (Z85 secret key, mode 0600) and PREFIX.pub
                             (Z85 public key, mode 0644); prints the public key.
  keys cluster --out FILE    the cluster key that signs grants: 32 random bytes,
                             hex, one line, mode 0600.`,
		Args: cobra.NoArgs,
	}
	c.AddCommand(keysCurveCmd(), keysClusterCmd())
	return c
}

func keysCurveCmd() *cobra.Command {
	var (
		out   string
		force bool
	)
	c := &cobra.Command{
		Use:   "curve --out PREFIX",
		Short: "Write a CURVE key pair: PREFIX.key (secret, 0600) and PREFIX.pub (public, 0644)",
		Long: `curve writes a new ZeroMQ CURVE key pair for the handshake side channel:
PREFIX.key holds the Z85 secret key (40 characters and a newline, mode 0600) and
PREFIX.pub the Z85 public key (mode 0644). The public key is printed as well.

A prefill instance serves with its secret key and an allow-list file listing the
public keys of the decode instances it admits (one per line); a decode instance
fetches with its own secret key and the prefill's PREFIX.pub.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return fmt.Errorf("%w --out: required: the path prefix of the key files", errFlag)
			}
			keyPath, pubPath := out+".key", out+".pub"
			if !force {
				if err := refuseExisting(keyPath, pubPath); err != nil {
					return err
				}
			}
			k, err := zmqchan.GenerateCurveKey()
			if err != nil {
				return err
			}
			if err := writeKeyFile(keyPath, k.Secret+"\n", 0o600, force); err != nil {
				return err
			}
			if err := writeKeyFile(pubPath, k.Public+"\n", 0o644, force); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s (secret, mode 0600) and %s (public); public key:\n", keyPath, pubPath)
			fmt.Fprintln(cmd.OutOrStdout(), k.Public)
			return nil
		},
	}
	c.Flags().StringVar(&out, "out", "", "path prefix of the key files (PREFIX.key, PREFIX.pub)")
	c.Flags().BoolVar(&force, "force", false, "overwrite existing key files")
	return c
}

func keysClusterCmd() *cobra.Command {
	var (
		out   string
		force bool
	)
	c := &cobra.Command{
		Use:   "cluster --out FILE",
		Short: "Write a cluster key (32 random bytes, hex, mode 0600)",
		Long: `cluster writes a new cluster key: 32 bytes from the system's secure random
source, hex-encoded on one line, mode 0600. Every instance of the cluster must
use the same file (--cluster-key-file). The key is not printed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return fmt.Errorf("%w --out: required: the path of the key file", errFlag)
			}
			if !force {
				if err := refuseExisting(out); err != nil {
					return err
				}
			}
			b := make([]byte, clusterKeyBytes)
			if _, err := rand.Read(b); err != nil {
				return fmt.Errorf("read random bytes: %w", err)
			}
			if err := writeKeyFile(out, hex.EncodeToString(b)+"\n", 0o600, force); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s (cluster key, mode 0600)\n", out)
			return nil
		},
	}
	c.Flags().StringVar(&out, "out", "", "path of the key file")
	c.Flags().BoolVar(&force, "force", false, "overwrite an existing key file")
	return c
}

// refuseExisting fails if any of paths exists, so that no file of a set is
// written when one of them would be overwritten.
func refuseExisting(paths ...string) error {
	for _, p := range paths {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("%s already exists; not overwriting it (pass --force to replace it)", p)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// writeKeyFile writes data to path with exactly mode perm (whatever the
// umask). Without force it creates the file exclusively; with force it
// writes a temporary file next to path and renames it over path, so the
// old file's mode does not carry over and a reader never sees half a key.
func writeKeyFile(path, data string, perm os.FileMode, force bool) error {
	if !force {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s already exists; not overwriting it (pass --force to replace it)", path)
		}
		if err != nil {
			return err
		}
		return finishKeyFile(f, path, data, perm)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	if err := finishKeyFile(f, tmp, data, perm); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// finishKeyFile sets the mode of the open file f (before any byte of the
// key is in it), writes data, syncs and closes it. It removes the file on
// failure.
func finishKeyFile(f *os.File, path, data string, perm os.FileMode) error {
	err := f.Chmod(perm)
	if err == nil {
		_, err = f.WriteString(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
