import lightning as L
import pytest
import torch

from cdlm import DiffusionLM, TextDataModule
from cdlm.control.attributes import AttributeVocab, attribute_accuracy, expressed, parse_attributes, parse_mr
from cdlm.data import corpus
from cdlm.sampling.denoiser import Denoiser
from cdlm.sampling.plan import Guidance, Plan
from cdlm.sampling.settings import SamplerConfig


def test_meaning_representations_in_every_spelling_are_the_same_attributes():
    want = {"name": "the eagle", "eattype": "pub", "customerrating": "5 out of 5"}
    assert parse_mr("name[The Eagle], eatType[pub], customer rating[5 out of 5]") == want
    assert parse_attributes({"name": "the  eagle", "eat_type": "Pub", "customer_rating": "5 out of 5"}) == want
    assert parse_attributes(["name=the eagle", "eat type=pub", "customerRating=5 out of 5"]) == want
    assert parse_attributes("food=french") == {"food": "french"}
    with pytest.raises(ValueError, match="not KEY=VALUE"):
        parse_attributes(["food french"])
    with pytest.raises(ValueError, match="bad meaning representation"):
        parse_mr("name[the eagle], food")


def test_vocab_encodes_multi_hot_and_names_unknown_values():
    vocab = AttributeVocab.build(["name[a], food[french]", "name[b], food[italian], area[riverside]"])
    assert vocab.names == ["area=riverside", "food=french", "food=italian", "name=a", "name=b"]
    rows = vocab.encode([{"food": "italian", "name": "b"}, {}])
    assert rows.tolist() == [[0, 0, 1, 0, 1], [0, 0, 0, 0, 0]]
    with pytest.raises(ValueError, match="food='thai' was never seen.*french, italian"):
        vocab.encode([{"food": "thai"}])
    assert vocab.encode([{"food": "thai", "name": "a"}], strict=False).tolist() == [[0, 0, 0, 1, 0]]


def test_every_generated_text_expresses_exactly_its_record():
    pairs = corpus.generate(300, seed=3)
    texts, records = [t for t, _ in pairs], [parse_mr(r.to_mr()) for _, r in pairs]
    assert attribute_accuracy(texts, records, embedded=True, exact=True) == 1.0
    partial = [{"name": r["name"]} for r in records]
    assert attribute_accuracy(texts, partial, embedded=True) == 1.0
    assert attribute_accuracy(texts, partial, embedded=True, exact=True) == 0.0  # they say more than the name
    wrong = [{**r, "name": "zizzi" if r["name"] != "zizzi" else "cotto"} for r in records]
    assert attribute_accuracy(texts, wrong, embedded=True) == 0.0
    assert not expressed("the eagle is is a pub .", {"name": "the eagle"}, embedded=True)  # not a description


def test_lexical_match_for_free_text_is_by_whole_words():
    assert expressed("Blue Spice is a coffee shop in the city centre.", {"eattype": "coffee shop", "area": "city centre"},
                     embedded=False)
    assert not expressed("Blue Spice serves cheapish food.", {"pricerange": "cheap"}, embedded=False)
    assert expressed("Prices are less than £20.", {"pricerange": "less than £20"}, embedded=False)


def test_data_module_carries_records_of_the_embedded_corpus():
    dm = TextDataModule(num_examples=400, batch_size=8, condition_column="mr")
    dm.setup("fit")
    ids, mask, attributes = next(iter(dm.val_dataloader()))
    assert attributes.shape == (8, len(dm.attribute_vocab))
    texts, mrs = dm.texts()[1][:8], dm.conditions()[1][:8]
    for text, mr, row in zip(texts, mrs, attributes):
        assert corpus.parse(text).to_mr() == mr
        names = {dm.attribute_vocab.names[i] for i in row.nonzero().flatten().tolist()}
        assert names <= {f"{k}={v}" for k, v in parse_mr(mr).items()}  # validation may hold unseen values
        assert len(names) >= 2


def test_data_module_reads_a_condition_column_from_csv(tmp_path):
    path = tmp_path / "e2e.csv"
    rows = ['mr,ref'] + [f'"name[N{i % 3}], food[{("French", "Thai")[i % 2]}]","N{i % 3} serves food {i}."'
                         for i in range(40)] + ['"name[X]",']  # a row without text is skipped
    path.write_text("\n".join(rows) + "\n")
    dm = TextDataModule(dataset=str(path), source={"text_column": "ref"}, condition_column="mr", batch_size=4)
    train, val = dm.conditions()
    assert len(train) + len(val) == 40 and len(dm.texts()[0]) == len(train)
    assert dm.attribute_vocab.names == ["food=french", "food=thai", "name=n0", "name=n1", "name=n2"]
    with pytest.raises(ValueError, match="no column 'meaning'"):
        TextDataModule(dataset=str(path), source={"text_column": "ref"}, condition_column="meaning").texts()
    txt = tmp_path / "a.txt"
    txt.write_text("one\ntwo\n")
    with pytest.raises(ValueError, match="needs a json/csv/hub dataset"):
        TextDataModule(dataset=str(txt), condition_column="mr").texts()
    with pytest.raises(ValueError, match="packing=false"):
        TextDataModule(condition_column="mr", packing=True)


def conditioned_model(dm, **kw):
    args = dict(network={"width": 32, "depth": 1, "heads": 2, "embed_dim": 8}, optim={"warmup_steps": 5}, val_samples=0, sampler={"steps": 4},
                attribute_names=dm.attribute_names())
    args.update(kw)
    return DiffusionLM(tokenizer_json=dm.tokenizer_json(), seq_len=dm.hparams.seq_len, **args)


def test_guidance_scale_interpolates_log_probabilities():
    torch.manual_seed(0)
    dm = TextDataModule(num_examples=64, condition_column="mr")
    model = conditioned_model(dm)
    with torch.no_grad():  # make the attributes matter at initialisation
        model.net.attribute.weight.normal_()
    net, sde = model.net.eval(), model.sde
    attrs = model.attribute_vocab.encode(model.attribute_requests({"food": "french"}, 3))
    x, t = torch.randn(3, 40, 8), torch.full((3,), 0.5)

    def logp(a):
        return net(x, sde.log_snr(t).float(), attribute_rows=a)[0].log_softmax(-1)

    cond, uncond = logp(attrs), logp(torch.zeros_like(attrs))
    assert not torch.allclose(cond, uncond, atol=1e-3)
    for s, want in ((1.0, cond), (0.0, uncond), (2.5, uncond + 2.5 * (cond - uncond))):
        d = Denoiser(net, sde, SamplerConfig(score_temperature=1.0), Plan.build(3, 40, guidance=Guidance(attrs, s)))
        assert torch.allclose(d(x, t).logits.log_softmax(-1), want.log_softmax(-1), atol=1e-4), s


@pytest.mark.slow
def test_conditioning_is_learned(tmp_path):
    """After a short run the true records make the held-out text more likely than no record."""
    L.seed_everything(0)
    dm = TextDataModule(num_examples=2000, batch_size=32, condition_column="mr")
    model = conditioned_model(dm, network={"width": 64, "depth": 2, "heads": 2, "embed_dim": 8}, optim={"warmup_steps": 5, "lr": 3e-3}, training={"self_condition": 0.0})
    trainer = L.Trainer(max_steps=150, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path)
    trainer.fit(model, dm)
    ids, _, attrs = next(iter(dm.val_dataloader()))
    t = torch.full((len(ids),), 0.6, dtype=torch.float64)
    torch.manual_seed(1)
    with torch.no_grad():
        given = model.diffusion_loss(model.net, ids, t, False, attribute_rows=attrs)[0].mean()
        torch.manual_seed(1)
        none = model.diffusion_loss(model.net, ids, t, False, attribute_rows=torch.zeros_like(attrs))[0].mean()
    assert given < none - 0.1, (float(given), float(none))


def test_sampling_with_attributes_and_its_errors():
    dm = TextDataModule(num_examples=64, condition_column="mr")
    model = conditioned_model(dm)
    gen = model.sample_ids(4, seed=0, attributes="food[french], area[riverside]", guidance_scale=2.0,
                           method="euler_maruyama", steps=3)
    assert gen.ids.shape == (4, 40)
    records = dm.conditions()[0][:2]
    assert model.sample_ids(2, seed=0, attributes=records).ids.shape == (2, 40)  # one record per sample
    with pytest.raises(ValueError, match="3 attribute requests for 2 samples"):
        model.sample_ids(2, attributes=records + records[:1])
    plain = DiffusionLM(tokenizer_json=dm.tokenizer_json(), network={"width": 32, "depth": 1, "heads": 2, "embed_dim": 8})
    with pytest.raises(ValueError, match="trained without attributes"):
        plain.sample_ids(2, attributes={"food": "french"})


def test_classifier_guidance_moves_x0_along_the_classifier_gradient(tmp_path):
    """The plug-and-play classifier: trained on a diffusion checkpoint's embeddings, it stands
    alone, and its gradient shifts x0 by scale · σ²/α · ∇ log p."""
    from cdlm.checkpoints import load_checkpoint
    from cdlm.models.classifier import AttributeClassifier

    L.seed_everything(0)
    dm = TextDataModule(num_examples=200, batch_size=16, condition_column="mr")
    model = DiffusionLM(tokenizer_json=dm.tokenizer_json(), network={"width": 32, "depth": 1, "heads": 2, "embed_dim": 8})
    path = tmp_path / "diffusion.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    clf = AttributeClassifier.from_diffusion(str(path), tokenizer_json=dm.tokenizer_json(), attribute_names=dm.attribute_names(),
                                         width=32, depth=1, heads=2)
    assert torch.allclose(clf.embedding, model.ema.embedding.table())
    trainer = L.Trainer(max_steps=5, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path)
    trainer.fit(clf, dm)
    trainer.save_checkpoint(tmp_path / "clf.ckpt")
    path.unlink()  # the classifier's checkpoint carries the embeddings itself
    clf, _ = load_checkpoint(str(tmp_path / "clf.ckpt"))
    assert torch.allclose(clf.embedding, model.ema.embedding.table())

    net, sde = model.ema.eval(), model.sde
    targets = clf.encode([{"food": "french"}] * 2)
    x, t = torch.randn(2, 40, 8), torch.full((2,), 0.4, dtype=torch.float64)
    one = SamplerConfig(score_temperature=1.0)
    towards = Guidance(classifier=clf, targets=targets, classifier_scale=3.0)
    plain = Denoiser(net, sde, one, Plan.build(2, 40))(x, t).x0
    guided = Denoiser(net, sde, one, Plan.build(2, 40, guidance=towards))(x, t).x0
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(clf.log_prob(xg, sde.log_snr(t).float(), targets).sum(), xg)
    factor = (sde.sigma(t) ** 2 / sde.alpha(t)).float().view(-1, 1, 1)
    assert grad.abs().sum() > 0
    assert torch.allclose(guided - plain, 3.0 * factor * grad, atol=1e-5)
    no_bias = torch.zeros(40, model.tokenizer.get_vocab_size())  # length control recomputes x0: the shift survives
    plain = Denoiser(net, sde, one, Plan.build(2, 40, logit_bias=no_bias))(x, t).x0
    guided = Denoiser(net, sde, one, Plan.build(2, 40, logit_bias=no_bias, guidance=towards))(x, t).x0
    assert torch.allclose(guided - plain, 3.0 * factor * grad, atol=1e-5)
    # it works for a model never trained with attributes, and refuses another model's embeddings
    assert model.sample_ids(2, seed=0, steps=3, attributes={"food": "french"}, classifier=clf).ids.shape == (2, 40)
    # rounding "last" reads only logits, so a classifier would silently do nothing: refused when asked,
    # replaced by "nearest" when it is only the model's default
    with pytest.raises(ValueError, match="rounding='last' never reads"):
        model.sample_ids(2, steps=3, attributes={"food": "french"}, classifier=clf, rounding="last")
    model.hparams.rounding = "last"
    plain = model.sample_ids(8, seed=0, steps=3, restarts=2, restart_steps=1, attributes={"food": "french"},
                             classifier=clf, classifier_scale=0.0)
    pushed = model.sample_ids(8, seed=0, steps=3, restarts=2, restart_steps=1, attributes={"food": "french"},
                              classifier=clf, classifier_scale=50.0)
    assert plain.nfe == 4 + 2 * 2 and not torch.equal(plain.ids, pushed.ids)  # rounding fell back to "nearest"
    other = DiffusionLM(tokenizer_json=dm.tokenizer_json(), network={"width": 32, "depth": 1, "heads": 2, "embed_dim": 8})
    with pytest.raises(ValueError, match="another model's embeddings"):
        other.sample_ids(2, steps=3, attributes={"food": "french"}, classifier=clf)


def test_the_classifier_sees_the_embeddings_as_the_diffusion_model_uses_them(tmp_path):
    """Unnormalised embeddings stay unnormalised: the classifier reads the network group."""
    from cdlm.models.classifier import AttributeClassifier

    dm = TextDataModule(num_examples=50, batch_size=16, condition_column="mr")
    model = DiffusionLM(tokenizer_json=dm.tokenizer_json(),
                        network={"width": 32, "depth": 1, "heads": 2, "embed_dim": 8, "normalize_embeddings": False})
    path = tmp_path / "diffusion.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    clf = AttributeClassifier.from_diffusion(str(path), tokenizer_json=dm.tokenizer_json(), attribute_names=dm.attribute_names(),
                                         width=32, depth=1, heads=2)
    assert torch.equal(clf.embedding, model.ema.embedding.weight.detach())
    assert not torch.allclose(clf.embedding.norm(dim=-1), torch.full((clf.embedding.shape[0],), 8 ** 0.5))
    # `cdlm fit --model.diffusion_ckpt` reads the checkpoint before building, then starts the classifier
    added, start = AttributeClassifier.arguments_from_checkpoints({"diffusion_ckpt": str(path)})
    cli = AttributeClassifier(tokenizer_json=dm.tokenizer_json(), attribute_names=dm.attribute_names(), width=32, depth=1,
                              heads=2, diffusion_ckpt=str(path), **added)
    start(cli)
    assert dict(cli.hparams) == dict(clf.hparams) and torch.equal(cli.embedding, clf.embedding)


def test_last_rounding_saves_one_call_per_pass_and_restart_levels_anneal():
    dm = TextDataModule(num_examples=64)
    model = DiffusionLM(tokenizer_json=dm.tokenizer_json(), network={"width": 32, "depth": 1, "heads": 2, "embed_dim": 8})
    full = model.sample_ids(2, seed=0, method="ddim", steps=4, restarts=3, restart_steps=1)
    last = model.sample_ids(2, seed=0, method="ddim", steps=4, restarts=3, restart_steps=1, rounding="last",
                            restart_log_snr=-2.0, restart_log_snr_end=0.0)
    assert full.nfe == (4 + 1) + 3 * (1 + 1) and last.nfe == 4 + 3 * 1
