%% What `erl -eval` runs: read upgradectl_otp.erl from stdin, compile it, run its main/2 with
%% the plain arguments (after -extra). upgradectl_otp.erl goes through no preprocessor. It runs
%% once, for a moment: no_ssa_opt skips the optimisation passes, a quarter of a step's CPU.
Read = fun R(Acc) -> case io:get_chars('', 65536) of eof -> lists:append(lists:reverse(Acc)); Data when is_list(Data) -> R([Data | Acc]) end end,
{ok, Tokens, _} = erl_scan:string(Read([]), 1),
Forms = fun F([], [], Done) -> lists:reverse(Done); F([{dot, _} = Dot | Rest], Form, Done) -> {ok, Parsed} = erl_parse:parse_form(lists:reverse([Dot | Form])), F(Rest, [], [Parsed | Done]); F([Token | Rest], Form, Done) -> F(Rest, [Token | Form], Done) end,
{ok, Module, Bin} = compile:forms(Forms(Tokens, [], []), [binary, return_errors, no_ssa_opt]),
{module, Module} = code:load_binary(Module, "upgradectl_otp.erl", Bin),
Module:main(Bin, init:get_plain_arguments()).
