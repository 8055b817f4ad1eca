"""GIMP 2.10 (gimpfu stubs, fake engine): Show Next Result steps the visible result through a group of n,
Keep Visible Result keeps the one showing without a dialog (gimpfu has no side-by-side view), the kept layer
takes the group's place with its mask and parasite, each in one undo step; scripts pass an index."""

from tests.gimp2.conftest import make_image
from tests.gimp2.test_plugin_fake_engine import edit_args, plugin_steps


def three_results(g2):
    image, layer = make_image(g2)
    g2.pdb.gimp_image_select_rectangle(image, 2, 20, 20, 30, 30)
    g2.pdb.python_fu_openai_edit_selection(image, layer, *edit_args("kite", n=3))
    image.undo_steps = []
    return image, layer, image.layers[0]


def test_next_result_then_keep_the_visible_one_interactively(g2, fake_engine):
    image, layer, group = three_results(g2)
    first, second, third = group.layers
    opened = []
    g2.gimpfu.DIALOG = lambda name, values: opened.append(name) or values
    g2.pdb.python_fu_openai_next_result(image, third, run_mode=g2.gimpfu.RUN_INTERACTIVE)  # from inside the group
    assert [la.visible for la in group.layers] == [False, True, False] and len(plugin_steps(image)) == 1
    g2.pdb.python_fu_openai_pick_result(image, group, run_mode=g2.gimpfu.RUN_INTERACTIVE)
    assert opened == []  # no dialog of one script-only field
    assert image.layers == [second, layer] and second.parent is None and second.visible
    assert second.mask is not None and second.parasite_find("gimp-openai") is not None
    assert len(plugin_steps(image)) == 2  # one for the step, one for the pick
    assert image.active_layer is second


def test_a_script_keeps_the_result_it_names(g2, fake_engine):
    image, layer, group = three_results(g2)
    g2.pdb.python_fu_openai_pick_result(image, group.layers[0].mask, 3)  # even from a result's mask
    assert [la.name for la in image.layers] == ["OpenAI: kite (3/3)", "Background"]
    assert len(plugin_steps(image)) == 1


def test_pick_on_a_plain_layer_says_where_to_click(g2, fake_engine):
    image, layer, group = three_results(g2)
    g2.pdb.python_fu_openai_pick_result(image, layer, 0, run_mode=g2.gimpfu.RUN_INTERACTIVE)
    assert "not a group of OpenAI results" in g2.gimp.state.messages[-1]
    assert image.layers[0] is group and plugin_steps(image) == []
