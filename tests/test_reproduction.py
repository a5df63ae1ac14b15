"""Published numbers beside ours: the published table's checks, the join and its verdicts, the real table."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from seqpeft.util.errors import SeqpeftInputError
from seqpeft.analysis.reproduction import PUBLISHED_COLUMNS, build_reproduction, read_published, write_reproduction

REPO = Path(__file__).resolve().parents[1]
HEADER = ",".join(PUBLISHED_COLUMNS)


def _published(tmp_path: Path, *rows: str) -> Path:
    path = tmp_path / "published.csv"
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return path


def _summary(values: dict[tuple[str, str, str], list[float]]) -> pd.DataFrame:
    rows = []
    for (task, model, method), mccs in values.items():
        for partition, mcc in enumerate(mccs):
            rows.append({"task": task, "model": model, "method": method, "partition": str(partition),
                         "test_mcc": mcc, "test_accuracy": 0.5 + mcc / 2, "dev_mcc": mcc - 0.01})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("row, problem", [
    ("e,src,t,m,lora,test,mcc,,,0.7x,,", "value '0.7x' is not a number"),
    ("e,src,t,m,lora,valid,mcc,,,0.7,,", "split 'valid'"),
    ("e,,t,m,lora,test,mcc,,,0.7,,", "column 'source' is empty"),
    ("e,src,t,m,lora,test,mcc,,,0.7,-1,", "non-negative-spread"),
])
def test_bad_published_rows_name_the_line_and_the_fix(tmp_path, row, problem):
    path = _published(tmp_path, "e,src,t,m,full,test,mcc,,,0.5,,", row)
    with pytest.raises(SeqpeftInputError, match=problem) as error:
        read_published(path)
    assert error.value.line == 3 and error.value.fix


def test_a_repeated_published_number_and_a_missing_column_are_refused(tmp_path):
    path = _published(tmp_path, "e,src,t,m,full,test,mcc,,,0.5,,", "e,other,t,m,full,test,mcc,,,0.6,,")
    with pytest.raises(SeqpeftInputError, match="repeats") as error:
        read_published(path)
    assert error.value.line == 3
    path.write_text("experiment,source,task\ne,src,t\n")
    with pytest.raises(SeqpeftInputError, match="lacks the column"):
        read_published(path)


def test_join_gives_mean_sd_difference_and_verdicts(tmp_path):
    runs = {("tf_0", "dnabert2", "full"): [0.70, 0.72, 0.74], ("tf_0", "nt", "lora"): [0.60],
            ("tf_0", "opt", "lora"): [0.40, 0.50]}
    published = read_published(_published(
        tmp_path,
        "gue,paper,tf_0,dnabert2,full,test,mcc,,,0.7199,,",         # no spread: 2 sd of the reproduction decides
        "gue,paper,tf_0,dnabert2,full,test,accuracy,,,0.80,0.001,",  # spread given: it decides
        "gue,paper,tf_0,nt,lora,test,mcc,,,0.6364,,",              # one run, no spread: undecided
        "gue,paper,tf_0,opt,lora,dev,mcc,,,0.10,,",                 # far outside 2 sd
        "gue,paper,tf_0,llama,lora,test,mcc,,,0.5,,",               # not run here: left out
    ))
    table = build_reproduction(published, _summary(runs)).set_index(["model", "metric", "split"])
    assert len(table) == 4
    full = table.loc[("dnabert2", "mcc", "test")]
    values = np.array(runs[("tf_0", "dnabert2", "full")])
    assert full.reproduced_n == 3
    assert full.reproduced_mean == pytest.approx(values.mean())
    assert full.reproduced_sd == pytest.approx(values.std(ddof=1))
    assert full.difference == pytest.approx(values.mean() - 0.7199)
    assert full.within is True  # |0.0001| <= 2 x 0.02
    accuracy = table.loc[("dnabert2", "accuracy", "test")]
    assert accuracy.within is False and abs(accuracy.difference) > 0.001
    single = table.loc[("nt", "mcc", "test")]
    assert single.reproduced_n == 1 and math.isnan(single.reproduced_sd) and single.within == ""
    assert table.loc[("opt", "mcc", "dev")].within is False


def test_signal_peptide_cells_and_their_kingdom_type_mean():
    rows = pd.DataFrame([
        {"task": "sp", "model": "esm", "method": "lora", "partition": p, "kingdom": k, "sp_type": t, "mcc2": v, "mcc1": v}
        for p, cells in {"t0v1": {("EUKARYA", "SP"): 0.9, ("NEGATIVE", "LIPO"): 0.7, ("ARCHAEA", "PILIN"): math.nan},
                         "t1v0": {("EUKARYA", "SP"): 0.8, ("NEGATIVE", "LIPO"): 0.5, ("ARCHAEA", "PILIN"): 0.3}}.items()
        for (k, t), v in cells.items()])
    summary = pd.DataFrame([{"task": "sp", "model": "esm", "method": "lora", "partition": p, "test_mcc": 0.5} for p in ("t0v1", "t1v0")])
    published = pd.DataFrame([
        {"experiment": "peft_sp", "source": "T2", "task": "sp", "model": "esm", "method": "lora", "split": "test",
         "metric": "mcc2", "kingdom": k, "sp_type": t, "value": 0.8, "spread": math.nan, "note": ""}
        for k, t in (("EUKARYA", "SP"), ("ALL", "ALL"), ("ARCHAEA", "PILIN"))])
    table = build_reproduction(published, summary, rows).set_index(["kingdom", "sp_type"])
    assert table.loc[("EUKARYA", "SP")].reproduced_mean == pytest.approx(0.85)
    assert table.loc[("ARCHAEA", "PILIN")].reproduced_n == 1  # undefined in one fold: left out, not zero
    # ALL: each run's mean over its defined cells, then mean over runs
    assert table.loc[("ALL", "ALL")].reproduced_mean == pytest.approx(np.mean([(0.9 + 0.7) / 2, (0.8 + 0.5 + 0.3) / 3]))


def test_write_reproduction_writes_table_and_figure(tmp_path):
    summary = _summary({("tf_0", "dnabert2", "full"): [0.70, 0.72, 0.74]})
    summary.to_csv(tmp_path / "summary.csv", index=False)
    published = _published(tmp_path, "gue,paper,tf_0,dnabert2,full,test,mcc,,,0.5,,")
    table = write_reproduction(published, tmp_path / "summary.csv", [], tmp_path / "r.csv", tmp_path / "r.png", tmp_path / "r.svg")
    assert pd.read_csv(tmp_path / "r.csv")["within"].tolist() == [False] == table["within"].tolist()
    svg = (tmp_path / "r.svg").read_text()
    assert "tf_0/dnabert2/full/mcc" in svg  # the outlier is labelled
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


def test_shipped_published_table_cites_every_number_and_matches_config_names():
    published = read_published(REPO / "config" / "published.csv")
    assert len(published) >= 40
    assert published["source"].str.len().min() > 20
    assert set(published["experiment"]) >= {"dnabert2_gue", "galaxy_mistral_dna", "mistral_dna_1m", "lingo", "peft_sp"}
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    gue = published[published.experiment == "dnabert2_gue"]
    assert len(gue) == 2 * 28 and set(gue.task) <= set(config["tasks"])
    assert set(gue.model) <= set(config["models"]) and set(gue.method) <= set(config["methods"])
    mcc2 = published[(published.experiment == "peft_sp") & (published.kingdom != "ALL")]
    for method, group in mcc2.groupby("method"):  # the paper's mean row is the mean of its 16 cells
        mean = published[(published.experiment == "peft_sp") & (published.kingdom == "ALL") & (published.method == method)]
        assert group["value"].mean() == pytest.approx(float(mean["value"].iloc[0]), abs=6e-4), method
    runs = published[published.model != "signalp6"]  # every published model run says its size
    assert runs["model_size"].str.match(r"^\d+[MB]$").all()
    peft_sp = published[published.experiment == "peft_sp"]
    assert peft_sp["source"].str.contains("journal version; not the bioRxiv preprint").all()
    adapter = peft_sp[(peft_sp.method == "adapter_3b") & (peft_sp.kingdom == "ALL")].iloc[0]
    assert adapter["value"] == pytest.approx(0.762) and "0.030" in adapter["note"] and "journal Table 2 value kept" in adapter["note"]
    galaxy = published[published.experiment == "galaxy_mistral_dna"]
    assert galaxy["note"].str.contains("epoch 3.0 of the 5-epoch run").all()


def test_reproduction_csv_carries_model_size_and_note(tmp_path):
    summary = _summary({("signalp", "esm2_3b", "adapter_3b"): [0.5, 0.6]})
    summary.to_csv(tmp_path / "summary.csv", index=False)
    shipped = read_published(REPO / "config" / "published.csv")
    adapter = shipped[(shipped.method == "adapter_3b") & (shipped.kingdom == "ALL")]
    adapter.to_csv(tmp_path / "published.csv", index=False)
    table = write_reproduction(tmp_path / "published.csv", tmp_path / "summary.csv", [], tmp_path / "r.csv",
                               tmp_path / "r.png", tmp_path / "r.svg")
    written = pd.read_csv(tmp_path / "r.csv", keep_default_na=False)
    assert written["model_size"].tolist() == ["3B"] == table["model_size"].tolist()
    assert "preprint" in written["note"].iloc[0] and written["note"].iloc[0] == adapter["note"].iloc[0]
