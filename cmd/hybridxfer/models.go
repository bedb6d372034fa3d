package main

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/spf13/cobra"
)

func modelsCmd() *cobra.Command {
	var (
		mf       modelFlags
		config   string
		tokens   int
		tp       int
		asJSON   bool
		onlyName string
	)
	c := &cobra.Command{
		Use:   "models",
		Short: "Print each preset's (or one config's) per-request state size on one rank",
		Long: `models prints, per model, the layers by kind, attention bytes per token, the fixed
recurrent bytes per request and state_bytes: the exact bytes of one request's
state of --prompt-tokens tokens on one rank at --tp, without block rounding or
padding, sliding windows capped at their window, draft layers excluded (their
bytes are draft_bytes).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if tokens < 0 {
				return fmt.Errorf("--prompt-tokens must be >= 0")
			}
			var models []*groups.Model
			switch {
			case config != "":
				m, err := mf.load(config)
				if err != nil {
					return err
				}
				models = append(models, m)
			case onlyName != "":
				m, err := mf.load(onlyName)
				if err != nil {
					return err
				}
				models = append(models, m)
			default:
				o, err := mf.presetOptions()
				if err != nil {
					return err
				}
				for _, n := range groups.PresetNames() {
					if o.MTP && !groups.HasMTP(n) {
						continue
					}
					m, err := groups.Preset(n, o)
					var fe *groups.FieldError
					if errors.As(err, &fe) && fe.Field == "kv_cache_dtype" {
						continue // e.g. fp8_ds_mla lists the MLA models only
					}
					if err != nil {
						return err
					}
					models = append(models, m)
				}
			}
			rows := make([]groups.Summary, 0, len(models))
			for _, m := range models {
				s, err := groups.Summarize(m, tokens, tp)
				if err != nil {
					return fmt.Errorf("%s at tp %d: %w", m.Name, tp, err)
				}
				rows = append(rows, s)
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), rows)
			}
			return writeModelsTable(cmd.OutOrStdout(), rows)
		},
	}
	mf.register(c)
	c.Flags().StringVar(&config, "config", "", "a Hugging Face config.json or a hybridxfer model JSON instead of the presets")
	c.Flags().StringVar(&onlyName, "model", "", "only this preset (or file)")
	c.Flags().IntVar(&tokens, "prompt-tokens", 4096, "tokens in the request")
	c.Flags().IntVar(&tp, "tp", 1, "tensor-parallel size")
	c.Flags().BoolVar(&asJSON, "json", false, "print a JSON array")
	return c
}

func layersText(s groups.Summary) string {
	kinds := make([]string, 0, len(s.LayersByKind))
	for k := range s.LayersByKind {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	parts := make([]string, 0, len(kinds)+1)
	for _, k := range kinds {
		parts = append(parts, fmt.Sprintf("%d %s", s.LayersByKind[k], k))
	}
	if s.DraftLayers > 0 {
		parts = append(parts, fmt.Sprintf("+%d draft", s.DraftLayers))
	}
	return strings.Join(parts, ", ")
}

func writeModelsTable(w io.Writer, rows []groups.Summary) error {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "model\tlayers\tlayers by kind\tattn B/token\tsliding B/token\tfixed recurrent B\tstate_bytes\tdraft_bytes\t")
	for _, s := range rows {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\t%d\t%d\t%d\t\n", s.Name, s.Layers, layersText(s),
			s.AttnTokenB, s.SlidingTokenB, s.FixedB, s.StateBytes, s.DraftBytes)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(rows) > 0 {
		fmt.Fprintf(w, "(%d tokens, tp %d, one rank, exact bytes: no block rounding or padding)\n", rows[0].PromptTokens, rows[0].TP)
	}
	return nil
}
