%% A process for the erlang playbook's tests that says it runs call_leg (its `$initial_call`, as
%% proc_lib records it), so that a patch of call_leg suspends, converts and resumes it, and that
%% dies at a chosen point of the sys protocol, the way a call dies of new code at its next
%% message: `after_resume` (dead when the patch checks it), or `at_second_suspend` (alive then,
%% dead when the patch's way back suspends it).
-module(sys_witness).
-export([start/1, init/2, system_continue/3, system_terminate/4, system_code_change/4,
         system_get_state/1]).

%% Started from a short-lived process (erl_call): not linked to it.
start(DiesAt) -> proc_lib:spawn(?MODULE, init, [self(), DiesAt]).

init(Parent, DiesAt) ->
    put('$initial_call', {call_leg, init, 1}),
    loop(Parent, #{dies_at => DiesAt, suspended => 0}).

loop(Parent, #{dies_at := DiesAt, suspended := N} = S) ->
    receive
        {system, _, suspend} when DiesAt =:= at_second_suspend, N >= 1 ->
            exit(killed_by_the_new_code);
        {system, From, Request} ->
            Counted = case Request of suspend -> S#{suspended := N + 1}; _ -> S end,
            sys:handle_system_msg(Request, From, Parent, ?MODULE, [], Counted)
    end.

%% Called once resumed (and after any other system message).
system_continue(_, _, #{dies_at := after_resume, suspended := N}) when N >= 1 ->
    exit(killed_by_the_new_code);
system_continue(Parent, _, S) -> loop(Parent, S).

system_terminate(Reason, _, _, _) -> exit(Reason).

system_code_change(S, _, _, _) -> {ok, S}.

system_get_state(S) -> {ok, S}.
